"""PyTorch's versions of `keras_mixed_dim.backend`'s choices (PyTorch-only
module; `keras_mixed_dim.backend.portable` has the rest)."""

import weakref

import keras

from keras_mixed_dim.backend.row_gradients import RowGradient
from keras_mixed_dim.backend.torch import sparse_rows
from keras_mixed_dim.backend.torch.residual_gradient import residual_gradient

__all__ = ["DENSE_TABLE_GRADIENT_ADVICE", "ROW_OPS", "arm_row_step",
           "attach_row_optimizer", "residual_gradient", "table_gradient", "take_rows"]

# -- sparse row updates: the lookups' backward gives sparse `.grad`s --------

ROW_OPS = sparse_rows
arm_row_step = sparse_rows.arm_row_step

DENSE_TABLE_GRADIENT_ADVICE = (
    "In your own train_step, scale the loss with "
    "`self.optimizer.scale_loss(loss)` before `backward()`, as Keras's does: "
    "the lookups then give sparse gradients (not under a LossScaleOptimizer, "
    "which scales the loss itself and needs dense gradients).")


def take_rows(table, rows):
    """`_RowLookup` (a sparse gradient for the table) where the table's
    `SparseRowOptimizer` takes row gradients and autograd records, else
    `ops.take`."""
    gathered = sparse_rows.take_rows(table, rows)
    if gathered is None:
        return keras.ops.take(table, rows, axis=0)
    return gathered


def attach_row_optimizer(optimizer, tables):
    # the table's lookups ask this optimizer, at backward time, whether to
    # give it a sparse gradient (a weak reference: the table must not keep a
    # replaced optimizer alive)
    for variable in tables:
        setattr(variable, sparse_rows.OWNER_ATTRIBUTE, weakref.ref(optimizer))


def table_gradient(gradient, armed):
    """A sparse `.grad` as a `RowGradient` by its rows; a dense one, in a
    step whose lookups gave sparse gradients, as the table's dense part (a
    deliberate whole read: no warning)."""
    rows = sparse_rows.row_gradient(gradient)
    if rows is not None:
        return RowGradient(*rows)
    return RowGradient(dense=gradient) if armed else gradient


# -- `DynamicEmbedding`'s lookup: rows in range read as `take_rows` reads
# them (the table's sparse gradient) --------------------------------------

take_rows_in_range = take_rows
