"""The optimizer slots that belong to a table's rows.

A table whose rows move (re-ranking, re-planning) or are handed to new ids
(`DynamicEmbedding`) must move or reset the optimizer state of those rows
too. Shared by the layers and `keras_mixed_dim.frequency`, so it lives
beside the layers and imports nothing of the package.
"""


def slot_variables(optimizer, variable):
    """Optimizer variables named after `variable` with one entry (or row) per
    row of it: slots shaped like the table (Adam's moments, FTRL's) and
    per-row ones (row-wise Adagrad's `(rows,)` accumulator)."""
    if optimizer is None:
        return []
    prefix = _slot_prefix(variable)
    # table `items` must not take the slots of table `items_2`
    longer = [p for p in _tracked_prefixes(optimizer)
              if p != prefix and p.startswith(prefix)]
    rows = variable.shape[0]
    return [
        v for v in optimizer.variables
        if v.name.startswith(prefix) and not any(v.name.startswith(p) for p in longer)
        and len(v.shape) >= 1 and v.shape[0] == rows
        and tuple(v.shape[1:]) in ((), tuple(variable.shape[1:]))
    ]


def _slot_prefix(variable):
    return variable.path.replace("/", "_").replace(":", "_") + "_"


def _tracked_prefixes(optimizer):
    """Slot name prefixes of the variables `optimizer` (or the optimizer it
    wraps) was built for."""
    owners = [optimizer, getattr(optimizer, "inner_optimizer", None)]
    owners += [getattr(o, "dense_optimizer", None) for o in owners if o is not None]
    return {_slot_prefix(v) for o in owners if o is not None
            for v in (getattr(o, "_trainable_variables", None) or [])}


def slot_initial_value(optimizer, slot):
    """The value `slot` starts from, given to the slots of moved ids: an
    accumulator's `initial_accumulator_value` (Adagrad, FTRL), else 0; or,
    where the optimizer says so (`reset_slot_value`, FTRL's `linear`), a
    function of the ids' new table rows."""
    # a LossScaleOptimizer's slots are its inner optimizer's
    owner = getattr(optimizer, "inner_optimizer", optimizer)
    inner = getattr(owner, "dense_optimizer", None)
    if inner is not None and any(slot is v for v in inner.variables):
        owner = inner
    reset = getattr(owner, "reset_slot_value", None)
    if reset is not None:
        return reset(slot)
    if not slot.name.endswith("accumulator"):
        return 0.0
    return float(getattr(owner, "initial_accumulator_value", 0.0))
