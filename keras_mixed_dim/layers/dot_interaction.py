"""DLRM's pairwise dot-product feature interaction."""

import numpy as np
from keras import layers
from keras import ops
from keras import saving


@saving.register_keras_serializable(package="keras_mixed_dim")
class DotInteraction(layers.Layer):
    """Dot products of every pair of feature vectors (DLRM's interaction).

    Args:
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        inputs: A list of tensors, each one feature vector `(batch, d)` or a
            block of `k` feature vectors `(batch, k, d)` (a
            `StackedEmbedding`'s output, say); the features are the
            vectors in list order, a block's in its own order. `F` in all.

    Returns:
        A tensor `(batch, F * (F - 1) / 2)` of the pairwise dot products
        `<x_i, x_j>` for `i < j`, in row-major order.

    Example:

    >>> x = [np.ones((2, 8), "float32") for _ in range(4)]
    >>> DotInteraction()(x).shape
    (2, 6)
    >>> DotInteraction()([x[0], np.ones((2, 3, 8), "float32")]).shape
    (2, 6)
    """

    def call(self, inputs):
        count = _count([x.shape for x in inputs])
        if all(len(x.shape) == 2 for x in inputs):
            stacked = ops.stack(inputs, axis=1)
        else:
            # One concatenation of the blocks: unstacking a block into
            # vectors and stacking them again would copy it twice (and twice
            # more in the backward pass).
            stacked = ops.concatenate(
                [ops.expand_dims(x, 1) if len(x.shape) == 2 else x for x in inputs],
                axis=1)
        gram = ops.matmul(stacked, ops.transpose(stacked, (0, 2, 1)))
        rows, cols = np.triu_indices(count, k=1)
        flat = ops.reshape(gram, (-1, count * count))
        return ops.take(flat, rows * count + cols, axis=1)

    def compute_output_shape(self, input_shape):
        count = _count(input_shape)
        return (input_shape[0][0], count * (count - 1) // 2)


def _count(input_shape):
    """Feature vectors in the inputs: one per `(batch, d)`, `k` per `(batch, k, d)`."""
    count = 0
    for shape in input_shape:
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[1] is None):
            # (the number of pairs is static: a block's length must be known)
            raise ValueError(
                "DotInteraction takes feature vectors `(batch, d)` and blocks of "
                f"them `(batch, k, d)` with a known `k`. Received an input of shape "
                f"{tuple(shape)}.")
        count += 1 if len(shape) == 2 else int(shape[1])
    return count
