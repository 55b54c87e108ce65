"""Writing a few rows of a table variable in place (TensorFlow).

`DynamicEmbedding` re-initialises the rows of newly admitted ids and moves
rows between tiers after nearly every step; `assign` of a scattered copy
would rewrite the whole table (and each optimizer slot) each time.
"""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2


def assign_rows(variable, rows, values):
    """`variable[rows] = values` in place (one `ResourceScatterNdUpdate`)."""
    rows = tf.constant(np.asarray(rows, np.int64)[:, None])
    variable.value.scatter_nd_update(rows, tf.constant(values, dtype=variable.dtype))


def write_rows(variable, rows, values):
    """`variable[rows] = values` in place with tensors, inside a traced step
    (duplicate rows must carry equal values)."""
    rows = tf.expand_dims(tf.cast(rows, tf.int64), -1)
    variable.value.scatter_nd_update(rows, tf.cast(values, variable.dtype))


def read_rows(variable, rows):
    """Rows of a variable as numpy, gathering only those rows."""
    from keras import ops

    from keras_mixed_dim.backend import take_rows

    rows = np.asarray(rows, np.int64)
    return ops.convert_to_numpy(take_rows(variable, ops.convert_to_tensor(
        rows.astype(np.int32))))


def graph_writes(layer, writes):
    """`layer._graph_writes(writes)` in a `tf.cond` on whether any entry
    names a slot: without XLA a traced step pays for every op it runs, and
    the block is some hundred ops per layer (more with each optimizer slot)
    that a batch without writes (padding only: slot -1) need not run.
    Malformed entries (a slot outside its tier) still run it, and write
    nothing there."""
    writes = tf.convert_to_tensor(writes)

    def write():
        layer._graph_writes(writes)
        return tf.constant(True)

    _functional_cond(tf.reduce_any(tf.greater_equal(writes[..., 0], 0)), write)


def run_if(condition, fn):
    """Runs `fn()` (row writes, nothing returned) only where the scalar
    `condition` holds, in a `tf.cond`: the ops of a variable that no entry
    of the batch writes to are skipped, not run on padding."""

    def run():
        fn()
        return tf.constant(True)

    _functional_cond(condition, run)


def _functional_cond(condition, branch):
    """`tf.cond(condition, branch, <nothing>)` kept as one `If` op that
    calls its taken branch as a function. TensorFlow otherwise lowers a
    cond in a traced step to switches, and the executor still visits every
    op of the untaken branch (a dead op costs it about what a small live
    one does), so the skipped writes would cost nearly as much as run
    ones."""
    taken = tf.cond(condition, branch, lambda: tf.constant(False))
    if not tf.executing_eagerly() and taken.op.type in ("If", "StatelessIf"):
        taken.op._set_attr("_lower_using_switch_merge",
                           attr_value_pb2.AttrValue(b=False))


# A step's row writes happen where the layer makes them, in place.
WRITES_IN_LAYER = True

# `fit` already reads a generator through tf.data, ahead of the step.
MAP_AHEAD = False


# The writes reach the layer as symbolic tensors inside a traced step.
CONCRETE_WRITES = False


def install_write_step(model, layers):
    """Nothing to install: the layer's writes inside the step are in place."""
