"""Backend-specific pieces, one folder per backend (as keras-rs splits them).

Nothing here imports a backend's framework at module level: each function
dispatches on `keras.backend.backend()` and imports the backend folder only
when it runs there, so the JAX path works with TensorFlow absent.
"""

import importlib

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


def residual_gradient(forward, backward, *operands):
    """`forward(*operands)` whose backward pass keeps only chosen residuals.

    Args:
        forward: Function of the operands returning `(outputs, residuals)`,
            `residuals` a tuple of tensors (or None entries).
        backward: Function `(upstream, residuals)` returning one gradient per
            operand (None where an operand gets none).
        *operands: The tensors to differentiate with respect to.

    Returns:
        `outputs` of `forward`, differentiable through `backward`.

    Example:

    >>> def forward(x):
    ...     return x * x, (x,)
    >>> def backward(upstream, residuals):
    ...     return (2.0 * residuals[0] * upstream,)
    >>> y = residual_gradient(forward, backward, keras.ops.ones((2,)))

    On TensorFlow and JAX this is `keras.ops.custom_gradient`, whose gradient
    function already closes over only what it uses. PyTorch's saves every
    input, so there a `torch.autograd.Function` keeps just the residuals.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        from keras_mixed_dim.backend.torch.residual_gradient import residual_gradient as torch_rg

        return torch_rg(forward, backward, *operands)

    def op(*args):
        outputs, residuals = forward(*args)

        def grad(*upstream, **unused):
            grads = backward(upstream[0], residuals)
            return tuple(keras.ops.zeros_like(a) if g is None else g
                         for a, g in zip(args, grads))

        return outputs, grad

    if backend == "tensorflow":
        from keras_mixed_dim.backend.tensorflow.gradients import read_variables

        operands = read_variables(operands)
    return keras.ops.custom_gradient(op)(*operands)


def take_rows(table, rows):
    """`ops.take(table, rows, axis=0)` for a table variable, reading only
    `rows` on every backend.

    On TensorFlow `ops.take` first reads the whole variable into a tensor;
    when the optimizer then updates the variable in place, TensorFlow must
    copy the whole table (the read still holds it), each step, outside XLA.
    A gather on the variable itself reads only the rows.

    On PyTorch, for a table updated by a `SparseRowOptimizer`, the lookup's
    backward gives the table a sparse gradient (`backend/torch/sparse_rows.py`);
    on JAX, inside the row train step (`backend/jax/sparse_rows.py`), the
    lookup is where the step takes the rows' gradients from. A layer whose
    tables get sparse row updates must read them through this function only
    and flag them in `build` (`keras_mixed_dim.backend.row_gradients.flag_table`);
    other reads are differentiated densely: correct, but not sparse.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_mixed_dim.backend.tensorflow.sparse_rows import take_rows as tf_take

        return tf_take(table, rows)
    if backend in ("jax", "torch"):
        rows_values = backend_module("sparse_rows").take_rows(table, rows)
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


def backend_module(name):
    """The current backend's module `keras_mixed_dim.backend.<backend>.<name>`
    (imported on first use, so no other backend's framework is needed)."""
    return importlib.import_module(
        f"keras_mixed_dim.backend.{keras.backend.backend()}.{name}")


def row_writes():
    """The backend's row writes for tables changed between or inside steps:
    `assign_rows` (numpy, between steps), `write_rows` (tensors, inside a
    step), `read_rows` (to numpy) and `WRITES_IN_LAYER` (whether a write the
    layer makes inside a step persists, False on JAX)."""
    return backend_module("row_writes")


def saturating_scatter_add(variable, positions, increments):
    """Adds `increments` at `positions` of an int32 count variable in place,
    saturating at the int32 maximum, where the backend can (TensorFlow);
    returns whether it did. Other backends use the portable dense update."""
    if keras.backend.backend() != "tensorflow":
        return False
    from keras_mixed_dim.backend.tensorflow import counting

    return counting.saturating_scatter_add(variable, positions, increments)


def divide_gradient(grad, scale):
    """`grad / scale` for a dense gradient or TensorFlow's `IndexedSlices`
    (whose values are divided; `/` is not defined on them)."""
    if keras.backend.backend() == "tensorflow":
        from keras_mixed_dim.backend.tensorflow import sparse_rows

        if sparse_rows.is_sparse(grad):
            return sparse_rows.divided(grad, scale)
    return grad / scale
