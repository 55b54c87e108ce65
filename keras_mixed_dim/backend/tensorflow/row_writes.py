"""Writing a few rows of a table variable in place (TensorFlow).

`DynamicEmbedding` re-initialises the rows of newly admitted ids and moves
rows between tiers after nearly every step; `assign` of a scattered copy
would rewrite the whole table (and each optimizer slot) each time.
"""

import numpy as np
import tensorflow as tf


def _writable(variable):
    """The variable's resource, refused where a `tf.distribute` strategy
    holds it: a mirrored variable has no row scatter (TensorFlow raises a
    bare `NotImplementedError`), and a row written on one replica only
    would leave the copies apart."""
    value = variable.value
    if isinstance(value, tf.distribute.DistributedValues):
        raise ValueError(
            f"`DynamicEmbedding` writes rows of its variable {variable.path!r} in "
            f"place, which a tf.distribute variable ({type(value).__name__}, "
            f"strategy {type(tf.distribute.get_strategy()).__name__}) cannot "
            f"take. Build and train the layer outside a tf.distribute strategy's "
            f"scope.")
    return value


def assign_rows(variable, rows, values):
    """`variable[rows] = values` in place (one `ResourceScatterNdUpdate`)."""
    rows = tf.constant(np.asarray(rows, np.int64)[:, None])
    _writable(variable).scatter_nd_update(rows, tf.constant(values, dtype=variable.dtype))


def write_rows(variable, rows, values):
    """`variable[rows] = values` in place with tensors, inside a traced step
    (duplicate rows must carry equal values). One `ResourceScatterUpdate`
    on the int32 rows: without XLA a step pays for each op it runs, and the
    nd form's index cast and reshape were two more per write."""
    _writable(variable).scatter_update(tf.IndexedSlices(tf.cast(values, variable.dtype), rows))


def read_rows(variable, rows):
    """Rows of a variable as numpy, gathering only those rows."""
    from keras import ops

    from keras_mixed_dim.backend import take_rows

    rows = np.asarray(rows, np.int64)
    return ops.convert_to_numpy(take_rows(variable, ops.convert_to_tensor(
        rows.astype(np.int32))))


# A step's row writes happen where the layer makes them, in place.
WRITES_IN_LAYER = True

# `fit` already reads a generator through tf.data, ahead of the step.
MAP_AHEAD = False


# The writes reach the layer as symbolic tensors inside a traced step.
CONCRETE_WRITES = False


def install_write_step(model, layers):
    """Nothing to install: the layer's writes inside the step are in place."""
