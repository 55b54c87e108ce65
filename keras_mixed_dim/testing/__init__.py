"""Testing tools (not part of the runtime API): the C-API servability check
that loads a SavedModel the way TF Serving does."""
