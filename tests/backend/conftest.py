"""Fixtures shared by the backends' own lookup tests."""

import pytest


@pytest.fixture
def portable(monkeypatch):
    """Runs `fn` with the layer's portable lookup."""
    from keras_mixed_dim.layers import dynamic_embedding

    def run(fn):
        with monkeypatch.context() as patch:
            patch.setattr(dynamic_embedding, "dynamic_lookup", lambda: None)
            return fn()

    return run
