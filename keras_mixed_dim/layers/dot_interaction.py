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
        inputs: A list of `F` tensors of shape `(batch, d)`.

    Returns:
        A tensor `(batch, F * (F - 1) / 2)` of the pairwise dot products
        `<x_i, x_j>` for `i < j`, in row-major order.

    Example:

    >>> x = [np.ones((2, 8), "float32") for _ in range(4)]
    >>> DotInteraction()(x).shape
    (2, 6)
    """

    def call(self, inputs):
        stacked = ops.stack(inputs, axis=1)
        gram = ops.matmul(stacked, ops.transpose(stacked, (0, 2, 1)))
        count = len(inputs)
        rows, cols = np.triu_indices(count, k=1)
        flat = ops.reshape(gram, (-1, count * count))
        return ops.take(flat, rows * count + cols, axis=1)

    def compute_output_shape(self, input_shape):
        count = len(input_shape)
        return (input_shape[0][0], count * (count - 1) // 2)
