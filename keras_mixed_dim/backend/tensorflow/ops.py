"""TensorFlow's versions of `keras_mixed_dim.backend`'s choices
(TensorFlow-only module; `keras_mixed_dim.backend.portable` has the rest)."""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from keras_mixed_dim.backend import portable
from keras_mixed_dim.backend.portable import _residual_op
from keras_mixed_dim.backend.tensorflow import counting
from keras_mixed_dim.backend.tensorflow import sparse_rows
from keras_mixed_dim.backend.tensorflow.bags import padded_bags
from keras_mixed_dim.backend.tensorflow.gradients import dense_gradient
from keras_mixed_dim.backend.tensorflow.gradients import read_variables

__all__ = ["DENSE_TABLE_GRADIENT_ADVICE", "ROW_OPS",
           "SUPPORTS_RAGGED_IDS", "dense_gradient", "divide_gradient",
           "has_distribution_strategy", "is_ragged_or_sparse", "model_variable_scope",
           "padded_bags", "residual_gradient", "saturating_scatter_add",
           "sparse_gradient_rows", "take_columns", "take_rows", "update_tables"]

SUPPORTS_RAGGED_IDS = True


def residual_gradient(forward, backward, *operands):
    """`keras.ops.custom_gradient` over the operands read as plain tensors
    (see `read_variables`)."""
    return keras.ops.custom_gradient(_residual_op(forward, backward))(
        *read_variables(operands))


def take_columns(x, columns, axis=-1):
    """One `GatherV2`: `ops.take` also maps negative indices, five more ops
    per call, which a stacked layer's serving graph pays once per width
    group at batch 1."""
    return tf.gather(x, columns, axis=axis)


def split_columns(x, sizes):
    """One `SplitV`: `ops.split` takes indices and turns them into sizes
    with six more ops per call."""
    return tf.split(x, [int(size) for size in sizes], axis=-1)


def saturating_scatter_add(variable, positions, increments):
    # read from the module at each call, as before the choice moved here:
    # a test that declines the in-place update replaces it there
    return counting.saturating_scatter_add(variable, positions, increments)


def is_ragged_or_sparse(x):
    return isinstance(x, (tf.RaggedTensor, tf.SparseTensor))


def divide_gradient(grad, scale):
    # an IndexedSlices has no `/`: its values are divided
    if sparse_rows.is_sparse(grad):
        return sparse_rows.divided(grad, scale)
    return grad / scale


def model_variable_scope(model):
    """The model's tf.distribute scope, so variables created for it (a
    re-planned layer's) are mirrored like its own."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None:
        return contextlib.nullcontext()
    return strategy.scope()


# -- sparse row updates: `IndexedSlices` gradients, kept sparse -------------

ROW_OPS = sparse_rows
take_rows = sparse_rows.take_rows
has_distribution_strategy = sparse_rows.has_strategy
update_tables = sparse_rows.update_tables

# A table's dense gradient on TensorFlow comes from a deliberate whole read
# (the lookups give `IndexedSlices`): no warning.
DENSE_TABLE_GRADIENT_ADVICE = None


def sparse_gradient_rows(gradient):
    """`(indices, values)` of an `IndexedSlices` gradient, else None."""
    if sparse_rows.is_sparse(gradient):
        return gradient.indices, gradient.values
    return None


# -- `DynamicEmbedding`'s lookup -------------------------------------------

# no bounds checks to skip: a TensorFlow gather of rows known to be in range
# is the gather `take_rows` runs on the variable
take_rows_in_range = take_rows


# float32 holds every integer up to 2**24, none of the odd ones above
_FLOAT32_EXACT = 2 ** 24


def count_bounds_reached(x, bounds):
    """One `Bucketize` op (`ops.digitize`): without XLA each op of the
    step costs tens of microseconds, and the comparisons are two per bound.
    `Bucketize` compares in float32, exact only up to 2**24: beyond, a
    slot beside a tier bound (tables of 16M slots) would be counted in the
    next tier and read another part's row, so bounds above 2**24 take the
    portable comparisons."""
    if not bounds:
        return tf.zeros_like(x, dtype=tf.int32)
    if max(bounds) > _FLOAT32_EXACT:
        return portable.count_bounds_reached(x, bounds)
    return tf.raw_ops.Bucketize(input=x, boundaries=[float(b) for b in bounds])


def equals_columns(values, columns, num_values):
    """The rows of the constant table `arange(num_values)[:, None] == columns`."""
    table = np.arange(num_values)[:, None] == np.asarray(columns)
    return tf.gather(table, values)
