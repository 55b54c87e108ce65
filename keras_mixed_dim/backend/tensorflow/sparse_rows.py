"""Row updates from `tf.IndexedSlices` gradients (TensorFlow-only module).

A gather's gradient on TensorFlow is an `IndexedSlices`: the looked-up rows'
gradients and their ids, duplicates included. These helpers keep it sparse
end to end: duplicates are summed per distinct row, only those rows of the
table and of its optimizer slots are read, and only they are written back
with `scatter_update`, so a step costs in proportion to the batch, never to
the table.
"""

import tensorflow as tf


def is_sparse(gradient):
    """Whether `gradient` is an `IndexedSlices` (a gather's gradient)."""
    return isinstance(gradient, tf.IndexedSlices)


def unique_rows(indices, values, num_rows=None):
    """`(rows, summed)`: the distinct row ids of a gather's gradient and each
    one's gradient summed over its duplicates (as the dense gradient would
    sum them)."""
    rows, position = tf.unique(tf.cast(tf.reshape(indices, [-1]), tf.int32))
    summed = tf.math.unsorted_segment_sum(values, position, tf.shape(rows)[0])
    return rows, summed


def gather_rows(variable, rows):
    """The current values of `rows` of a Keras variable."""
    return tf.gather(variable.value, rows)


def scatter_rows(variable, rows, values):
    """Writes `values` to `rows` of a Keras variable, in place."""
    variable.value.scatter_update(
        tf.IndexedSlices(tf.cast(values, variable.dtype), rows))


def scatter_sub_rows(variable, indices, values):
    """Subtracts `values` from rows `indices` (duplicates accumulate), in place."""
    variable.value.scatter_sub(
        tf.IndexedSlices(tf.cast(values, variable.dtype), indices))


def take_rows(table, rows):
    """Rows of a Keras variable through a gather on the resource (only the
    rows are read; the gradient is an `IndexedSlices`)."""
    value = getattr(table, "value", table)
    if isinstance(value, tf.Variable):
        return tf.gather(value, rows)
    return tf.gather(tf.convert_to_tensor(value), rows)
