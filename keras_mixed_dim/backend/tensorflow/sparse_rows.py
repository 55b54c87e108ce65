"""Row updates from `tf.IndexedSlices` gradients (TensorFlow-only module).

A gather's gradient on TensorFlow is an `IndexedSlices`: the looked-up rows'
gradients and their ids, duplicates included. These helpers keep it sparse
end to end: duplicates are summed per distinct row, only those rows of the
table and of its optimizer slots are read, and only they are written back
with `scatter_update`, so a step costs in proportion to the batch, never to
the table. `update_tables` does the same under a tf.distribute strategy,
on every replica's copy, with the gradient of the global batch.
"""

import tensorflow as tf


def is_sparse(gradient):
    """Whether `gradient` is an `IndexedSlices` (a gather's gradient)."""
    return isinstance(gradient, tf.IndexedSlices)


def divided(gradient, factor):
    """An `IndexedSlices` gradient divided by `factor` (a loss scale)."""
    return tf.IndexedSlices(gradient.values / tf.cast(factor, gradient.values.dtype),
                            gradient.indices, gradient.dense_shape)


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


# Strategies whose replicas each hold a full copy of every variable (or one
# device holds the only copy), which the row updates below are written for.
_SUPPORTED_STRATEGIES = ("MirroredStrategy", "MultiWorkerMirroredStrategy",
                         "OneDeviceStrategy")


def has_strategy():
    """Whether a tf.distribute strategy is in scope."""
    return tf.distribute.has_strategy()


def check_strategy(strategy):
    """Raises when `strategy` is a tf.distribute strategy the sparse row
    updates are not written for."""
    supported = tuple(getattr(tf.distribute, name) for name in _SUPPORTED_STRATEGIES)
    if not isinstance(strategy, supported):
        raise ValueError(
            "SparseRowOptimizer updates tables under "
            f"{', '.join(_SUPPORTED_STRATEGIES)} only; this model runs under "
            f"{type(strategy).__name__}. Compile with the wrapped Keras "
            "optimizer alone (Keras's dense table updates) under that strategy.")


def update_tables(pairs, update, learning_rate, step):
    """Calls `update(grad, variable, learning_rate, step)` for each
    `(grad, variable)` of `pairs`, once per replica's copy of `variable` with
    the gradient of the global batch.

    Without a tf.distribute strategy this is a plain loop. Under one, it
    aggregates as Keras's `TFOptimizer` does (`_backend_update_step`): a SUM
    all-reduce of the gradients in the replica context (each replica's loss
    is already divided by the replica count, so the sum is the global
    batch's gradient), then `extended.update` on every copy, so each copy
    gets the same rows from the same summed gradient.
    """
    if not tf.distribute.has_strategy():
        for grad, variable in pairs:
            update(grad, variable, learning_rate, step)
        return
    strategy = tf.distribute.get_strategy()
    check_strategy(strategy)
    grads = [grad for grad, _ in pairs]
    variables = [variable for _, variable in pairs]
    context = tf.distribute.get_replica_context()
    if context is not None and grads:
        # Deduplicated first, so the all-reduce carries each replica's
        # distinct rows once. An `IndexedSlices` all-reduce concatenates (an
        # all-gather across workers) and stays sparse; a dense gradient (a
        # small table differentiated densely) is summed like Keras's.
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                   [_deduplicated(grad) for grad in grads])
    # Rows that several replicas used, summed: with distinct rows every
    # scatter below is deterministic (a GPU scatter adds duplicates
    # atomically, in any order), so the copies stay bit-identical.
    grads = [_deduplicated(grad) for grad in grads]

    def update_copies(distribution, grads, learning_rate, step):
        for grad, variable in zip(grads, variables):
            # `fn` ignores the per-device variable it gets: inside
            # `extended.update`, reads and writes of the Keras variable and
            # of its slots (mirrored too) resolve to that device's copy.
            distribution.extended.update(
                variable.value,
                lambda _, grad, learning_rate, step, variable=variable: update(
                    grad, variable, learning_rate, step),
                args=(grad, learning_rate, step), group=False)

    if context is None:  # cross-replica context: `pairs` is the global gradient
        update_copies(strategy, grads, learning_rate, step)
    else:
        tf.__internal__.distribute.interim.maybe_merge_call(
            update_copies, strategy, grads, learning_rate, step)


def _deduplicated(gradient):
    if not is_sparse(gradient):
        return gradient
    rows, summed = unique_rows(gradient.indices, gradient.values)
    return tf.IndexedSlices(summed, rows, gradient.dense_shape)
