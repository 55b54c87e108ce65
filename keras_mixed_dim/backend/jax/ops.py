"""JAX's versions of `keras_mixed_dim.backend`'s choices (JAX-only module;
`keras_mixed_dim.backend.portable` has the rest: `keras.ops` on JAX already
gives dense gradients and custom gradients that keep only their residuals).
"""

import keras

from keras_mixed_dim.backend.jax import sparse_rows

__all__ = ["DENSE_TABLE_GRADIENT_ADVICE", "ROW_OPS", "row_train_step",
           "row_value_and_grad", "take_rows"]

# -- sparse row updates: the row step differentiates the gathered rows ------

ROW_OPS = sparse_rows
row_value_and_grad = sparse_rows.value_and_grad
row_train_step = sparse_rows.train_step

DENSE_TABLE_GRADIENT_ADVICE = (
    "Build the model as keras_mixed_dim.models.IdSafeModel (its train step "
    "differentiates with respect to the rows the layers gather), or take the "
    "gradients with keras_mixed_dim.optimizers.sparse_row_value_and_grad in "
    "your own train_step.")


def take_rows(table, rows):
    """The row step's tapped lookup while it traces (the rows' gradients come
    from there), else `ops.take`."""
    gathered = sparse_rows.take_rows(table, rows)
    if gathered is None:
        return keras.ops.take(table, rows, axis=0)
    return gathered
