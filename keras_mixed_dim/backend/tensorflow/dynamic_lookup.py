"""TensorFlow's own `DynamicEmbedding` lookup: the portable lookup over
dense reads of the small tables (TensorFlow-only module).

The portable lookup (`DynamicEmbedding._vectors`) gathers on the variables,
so each variable's gradient is an `IndexedSlices` of every row gathered (a
few per id). Keras's optimizers other than plain SGD turn it into a dense
tensor once per use (Adam: twice, for each moment, each an
`UnsortedSegmentSum` over all the gathered rows), after the tape has
concatenated the slices of a variable's several gathers: at a batch of
4096, some 1.2 ms of the dynamic model's 10 ms step. A small variable is
read whole instead and its gradient made dense once (`dense_gradient`): the
same sums in the same order, so the same values, and the same outputs.

A variable above `DENSE_GRADIENT_ELEMENTS` keeps its `IndexedSlices` (plain
SGD's update scatters them, a cost in proportion to the batch that a dense
gradient would make one in proportion to the table), and so does every
table a `SparseRowOptimizer` updates by rows (`attach_row_optimizer`: its
row step needs the rows), where `vectors` returns None.
"""

import math
import weakref

import tensorflow as tf

from keras_mixed_dim.backend.tensorflow.gradients import dense_gradient

# the most elements of a variable read whole: a dense gradient of 256 KiB
# (a zero fill and one segment sum) costs about what the sparse one's extra
# ops cost
DENSE_GRADIENT_ELEMENTS = 2 ** 16

# the attribute of a table that a `SparseRowOptimizer` updates by rows
OWNER_ATTRIBUTE = "_keras_mixed_dim_row_optimizer"


def attach(optimizer, tables):
    """Marks `tables` as updated by rows by `optimizer` (a weak reference:
    a table must not keep a replaced optimizer alive)."""
    for variable in tables:
        setattr(variable, OWNER_ATTRIBUTE, weakref.ref(optimizer))


def _row_updated(variable):
    owner = getattr(variable, OWNER_ATTRIBUTE, None)
    return owner is not None and owner() is not None


def vectors(layer, safe, admitted, buckets):
    """`DynamicEmbedding._vectors` (the same contract) over dense reads of
    the variables of at most `DENSE_GRADIENT_ELEMENTS`, or None where every
    variable is larger or a `SparseRowOptimizer` updates a table by rows.

    Args:
        layer: A built `DynamicEmbedding`.
        safe: int slots, clipped into range.
        admitted: bool, where the id reads its slot's row.
        buckets: int fallback buckets (out of range: no row).

    Returns:
        `(outputs, valid)`: `safe.shape + (output_dim,)` float32 and bool
        `safe.shape` (where the bucket was in range), or None.
    """
    variables = layer.width_tables
    if any(_row_updated(v) for v in variables):
        return None
    small = [math.prod(v.shape) <= DENSE_GRADIENT_ELEMENTS for v in variables]
    if not any(small):
        return None
    # one read per variable: its gathers' slices are summed into one dense
    # gradient
    tables = [dense_gradient(tf.identity(v.value)) if read else v
              for v, read in zip(variables, small)]
    return layer._vectors(safe, admitted, buckets, tables=tables)
