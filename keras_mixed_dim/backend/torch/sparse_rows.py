"""A PyTorch train step whose embedding-table gradients are rows, not tables.

Autograd of an index into a table accumulates a dense gradient of the
table's shape. This step makes each lookup through
`keras_mixed_dim.backend.take_rows` a fresh leaf tensor (the looked-up rows,
detached from the table) and reads the rows' gradients from those leaves
after `backward()`: `SparseRowOptimizer` then updates only those rows and
their slots (`RowGradient`). A table that something else also reads as a
whole (a regularizer, the MD layer's small head blocks) still gets its dense
`.grad`, which is added, so no gradient is dropped.
"""

import warnings

import keras
import torch

from keras_mixed_dim.backend.row_gradients import RowGradient

_TAPS = []


class _RowTap:
    def __init__(self, tables):
        self.tables = tables  # ids of the table variables
        self.calls = []  # (variable, rows, leaf)

    def take(self, table, rows):
        if id(table) not in self.tables:
            return None
        value = table.value.detach()
        rows = torch.as_tensor(rows, device=value.device)
        leaf = value.index_select(0, rows.reshape(-1)).reshape(
            tuple(rows.shape) + tuple(value.shape[1:]))
        leaf.requires_grad_(True)
        self.calls.append((table, rows, leaf))
        return leaf


def take_rows(table, rows):
    """The tapped lookup while a sparse step runs its forward pass, else `None`."""
    if not _TAPS:
        return None
    return _TAPS[-1].take(table, rows)


def train_step(model, data, keras_step):
    """`TorchTrainer.train_step` with row gradients for the optimizer's tables
    (with another optimizer, `keras_step(data)`: the model's own step)."""
    optimizer = model.optimizer
    if not getattr(optimizer, "accepts_row_gradients", False) or not optimizer.table_variables:
        return keras_step(data)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    tap = _RowTap({id(v) for v in optimizer.table_variables})
    _TAPS.append(tap)
    try:
        if model._call_has_training_arg:
            y_pred = model(x, training=True)
        else:
            y_pred = model(x)
    finally:
        _TAPS.pop()
    model.zero_grad()
    loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                               training=True)
    model._loss_tracker.update_state(
        loss, sample_weight=next(i for i in keras.tree.flatten(x) if i is not None).shape[0])
    loss = optimizer.scale_loss(loss)
    trainable = model.trainable_weights[:]
    if not trainable:
        warnings.warn("The model does not have any trainable weights.")
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    loss.backward()
    grads = [v.value.grad for v in trainable]
    rows_of = {}
    for table, rows, leaf in tap.calls:
        if leaf.grad is not None:
            rows_of.setdefault(id(table), []).append((rows, leaf.grad))
    tables = {id(v) for v in optimizer.table_variables}
    for i, variable in enumerate(trainable):
        if id(variable) not in tables:
            continue
        parts = rows_of.get(id(variable))
        tail = tuple(variable.shape[1:])
        if parts:
            grads[i] = RowGradient(
                torch.cat([rows.reshape(-1) for rows, _ in parts]),
                torch.cat([g.reshape((-1,) + tail) for _, g in parts]),
                grads[i])
        elif grads[i] is not None:
            grads[i] = RowGradient(dense=grads[i])
    with torch.no_grad():
        optimizer.apply(grads, trainable)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


# -- row updates inside `SparseRowOptimizer` ----------------------------------

def unique_rows(indices, values, num_rows):
    """`(rows, summed)`: distinct row ids, each with its summed gradient."""
    rows, inverse = torch.unique(indices.reshape(-1).long(), return_inverse=True)
    summed = torch.zeros((rows.shape[0],) + tuple(values.shape[1:]),
                         dtype=values.dtype, device=values.device)
    return rows, summed.index_add_(0, inverse.reshape(-1), values)


def gather_rows(variable, rows):
    return variable.value.detach().index_select(0, rows)


def scatter_rows(variable, rows, values):
    """Writes `values` to `rows` of the variable, in place."""
    variable.value.data.index_copy_(0, rows, values.to(variable.value.dtype))
