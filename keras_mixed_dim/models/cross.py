"""DCNv2's low-rank cross layer (Wang et al. 2021, arXiv:2008.13535), as the
MLPerf DLRM-DCNv2 reference (TorchRec's `LowRankCrossNet`) uses it.

Written with `keras.ops` rather than taken from keras-rs: `keras_rs` 0.4
(whose `FeatureCross(projection_dim=r)` computes the same function, checked in
tests/models/test_cross.py) requires Python >= 3.11 while this package
supports 3.10, and importing it imports JAX on every backend.
"""

import keras
from keras import initializers
from keras import ops
from keras import saving


@saving.register_keras_serializable(package="keras_mixed_dim")
class LowRankCross(keras.layers.Layer):
    """One low-rank cross layer: `x_{l+1} = x_0 * (U (V x_l) + b) + x_l`.

    `V` is `(d, rank)` and `U` is `(rank, d)`, so a layer costs `2 d rank + d`
    parameters instead of the full-rank `d**2 + d`. Stack several to cross
    features up to degree `layers + 1` (see `cross_network`).

    Args:
        rank: Inner width of the low-rank kernel (MLPerf: 512).
        kernel_initializer: Initializer of `V` and `U`.
        bias_initializer: Initializer of `b`.
        **kwargs: Base layer arguments.

    Call arguments:
        x0: The network's input, `(batch, d)`.
        x: The previous cross layer's output (`x0` for the first), `(batch, d)`.

    Returns:
        `(batch, d)`.

    Example:

    ```python
    x0 = keras.Input((3456,))
    x = x0
    for i in range(3):
        x = LowRankCross(512, name=f"cross_{i}")(x0, x)
    ```
    """

    def __init__(self, rank, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if int(rank) != rank or rank < 1:
            raise ValueError(f"`rank` must be an integer >= 1. Received: rank={rank!r}")
        self.rank = int(rank)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)

    def build(self, x0_shape, x_shape=None):
        dim = x0_shape[-1]
        if dim is None:
            raise ValueError("LowRankCross needs a known last dimension; "
                             f"received input shape {x0_shape}.")
        self.down_kernel = self.add_weight(
            shape=(dim, self.rank), initializer=self.kernel_initializer,
            name="down_kernel")
        self.up_kernel = self.add_weight(
            shape=(self.rank, dim), initializer=self.kernel_initializer,
            name="up_kernel")
        self.bias = self.add_weight(shape=(dim,), initializer=self.bias_initializer,
                                    name="bias")

    def call(self, x0, x=None):
        if x is None:
            x = x0
        crossed = ops.matmul(ops.matmul(x, self.down_kernel), self.up_kernel) + self.bias
        return x0 * crossed + x

    def compute_output_shape(self, x0_shape, x_shape=None):
        return x0_shape

    def get_config(self):
        return {**super().get_config(), "rank": self.rank,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


def cross_network(x0, num_layers, rank, name="cross"):
    """`num_layers` `LowRankCross` layers on `x0` (named `NAME_0`, ...).

    Args:
        x0: The input tensor `(batch, d)` (the cross layers' `x0`).
        num_layers: Integer >= 1.
        rank: Rank of each `LowRankCross` layer.
        name: Prefix of the layer names.

    Returns:
        The output tensor of the last cross layer, `(batch, d)`.

    Example:

    >>> x0 = keras.Input((64,))
    >>> cross_network(x0, num_layers=3, rank=16).shape
    (None, 64)
    """
    if int(num_layers) != num_layers or num_layers < 1:
        raise ValueError(f"`num_layers` must be an integer >= 1. Received: {num_layers!r}")
    x = x0
    for i in range(int(num_layers)):
        x = LowRankCross(rank, name=f"{name}_{i}")(x0, x)
    return x
