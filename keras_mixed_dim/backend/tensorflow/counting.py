"""In-place count updates on the TensorFlow backend (TensorFlow-only module).

`keras.ops` has no in-place scatter-add on a variable, so the portable count
update builds a dense delta and reassigns the whole vector: O(vocabulary)
per step. Here only the batch's distinct ids are read and written, also
under XLA. Variables of a tf.distribute strategy (the counts are on-read,
summed) have no scatter methods, so they keep the portable path.
"""

import numpy as np
import tensorflow as tf

_INT32_MAX = np.iinfo(np.int32).max


def saturating_scatter_add(variable, indices, updates):
    """Adds `updates` at `indices` of an int32 Keras variable, in place,
    saturating at the int32 maximum instead of wrapping negative.

    Returns:
        False, having done nothing, for a variable of a tf.distribute
        strategy (the caller then takes the portable path); True otherwise.
    """
    if isinstance(variable.value, tf.distribute.DistributedValues):
        return False
    target = variable.value
    unique, position = tf.unique(tf.cast(indices, tf.int32))
    added = tf.math.unsorted_segment_sum(
        tf.cast(updates, tf.int64), position, tf.shape(unique)[0])
    current = tf.cast(tf.gather(target, unique), tf.int64)
    total = tf.minimum(current + added, _INT32_MAX)
    target.scatter_update(tf.IndexedSlices(tf.cast(total, tf.int32), unique))
    return True
