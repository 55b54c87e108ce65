"""Backend-specific pieces, one folder per backend (as keras-rs splits them).

Nothing here imports a backend's framework at module level: each function
dispatches on `keras.backend.backend()` and imports the backend folder only
when it runs there, so the JAX path works with TensorFlow absent.
"""

import keras


def dense_gradient(x):
    """Identity whose gradient is a dense tensor on every backend.

    Only TensorFlow needs work (see
    `keras_mixed_dim.backend.tensorflow.gradients`); JAX and PyTorch
    gradients of a gather are dense already.
    """
    if keras.backend.backend() != "tensorflow":
        return x
    from keras_mixed_dim.backend.tensorflow.gradients import dense_gradient as tf_dense

    return tf_dense(x)


def take_rows(table, rows):
    """`ops.take(table, rows, axis=0)` for a table variable, reading only
    `rows` on every backend.

    On TensorFlow `ops.take` first reads the whole variable into a tensor;
    when the optimizer then updates the variable in place, TensorFlow must
    copy the whole table (the read still holds it), each step, outside XLA.
    A gather on the variable itself reads only the rows.

    On JAX and PyTorch, inside the train step of
    `keras_mixed_dim.optimizers.sparse_rows.enable_sparse_row_steps`, the
    lookup is also where the step takes the rows' gradients from. A layer
    whose tables get sparse row updates must read them through this function
    only (other reads are differentiated densely: correct, but not sparse).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_mixed_dim.backend.tensorflow.sparse_rows import take_rows as tf_take

        return tf_take(table, rows)
    if backend in ("jax", "torch"):
        # While a sparse train step traces or runs the forward pass, the
        # tables it differentiates by rows are looked up through its tap.
        if backend == "jax":
            from keras_mixed_dim.backend.jax.sparse_rows import take_rows as tapped
        else:
            from keras_mixed_dim.backend.torch.sparse_rows import take_rows as tapped
        rows_values = tapped(table, rows)
        if rows_values is not None:
            return rows_values
    return keras.ops.take(table, rows, axis=0)


def take_columns(x, columns):
    """`ops.take(x, columns, axis=-1)` for non-negative constant `columns`.

    On TensorFlow one `GatherV2`: `ops.take` also maps negative indices,
    five more ops per call, which a stacked layer's serving graph pays once
    per width group at batch 1.
    """
    if keras.backend.backend() != "tensorflow":
        return keras.ops.take(x, columns, axis=-1)
    import tensorflow as tf

    return tf.gather(x, columns, axis=-1)


def is_ragged_or_sparse(x):
    """Whether `x` is a `tf.RaggedTensor` or `tf.SparseTensor` (only
    TensorFlow has them; checked without importing it elsewhere)."""
    if keras.backend.backend() != "tensorflow" or x is None:
        return False
    import tensorflow as tf

    return isinstance(x, (tf.RaggedTensor, tf.SparseTensor))


def padded_bags(ids, weights, bag_size, layer_name=None):
    """Ragged or sparse ids (and weights) as padded `(batch, bag_size)` ids
    (-1 for padding) and weights: see
    `keras_mixed_dim.backend.tensorflow.bags.padded_bags`."""
    from keras_mixed_dim.backend.tensorflow.bags import padded_bags as tf_padded

    return tf_padded(ids, weights, bag_size, layer_name)
