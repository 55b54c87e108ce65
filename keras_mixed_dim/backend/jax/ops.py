"""JAX's versions of `keras_mixed_dim.backend`'s choices (JAX-only module;
`keras_mixed_dim.backend.portable` has the rest: `keras.ops` on JAX already
gives dense gradients and custom gradients that keep only their residuals).
"""

import jax.numpy as jnp
import keras
import numpy as np
from jax import lax

from keras_mixed_dim.backend.jax import sparse_rows

__all__ = ["DENSE_TABLE_GRADIENT_ADVICE", "ROW_OPS", "nonnegative_divmod",
           "row_train_step", "row_value_and_grad", "take_rows", "take_rows_in_range"]

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


# -- `DynamicEmbedding`'s lookup: operands known to be in range -------------

def take_rows_in_range(table, rows):
    """The row step's tapped lookup while it traces, else a gather that
    promises XLA the rows are in range (no bounds checks on the gather or
    on its gradient's scatter)."""
    gathered = sparse_rows.take_rows(table, rows)
    if gathered is not None:
        return gathered
    value = jnp.asarray(getattr(table, "value", table))
    return value.at[jnp.asarray(rows)].get(mode="promise_in_bounds")


def nonnegative_divmod(x, divisor):
    """`lax.div` and `lax.rem`: truncation is flooring for `x >= 0`."""
    x = jnp.asarray(x)
    divisor = np.asarray(divisor, x.dtype)
    return lax.div(x, divisor), lax.rem(x, divisor)
