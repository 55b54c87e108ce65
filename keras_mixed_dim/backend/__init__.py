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
    """
    if keras.backend.backend() != "tensorflow":
        return keras.ops.take(table, rows, axis=0)
    from keras_mixed_dim.backend.tensorflow.sparse_rows import take_rows as tf_take

    return tf_take(table, rows)
