"""In-place count updates on the TensorFlow backend (TensorFlow-only module).

`keras.ops` has no in-place scatter-add on a variable, so the portable count
update builds a dense delta and reassigns the whole vector: O(vocabulary)
per step. TensorFlow's `scatter_add` touches only the batch's rows, also
under XLA. Variables of a tf.distribute strategy (the counts are on-read,
summed) have no `scatter_add`, so they keep the portable path.
"""

import tensorflow as tf


def scatter_add(variable, indices, updates):
    """Adds `updates` at `indices` of a Keras variable, in place.

    Returns:
        False, having done nothing, for a variable of a tf.distribute
        strategy (the caller then takes the portable path); True otherwise.
    """
    if isinstance(variable.value, tf.distribute.DistributedValues):
        return False
    variable.value.scatter_add(tf.IndexedSlices(updates, indices))
    return True
