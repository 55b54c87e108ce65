"""Keras layers of keras-mixed-dim (importing this registers them for loading)."""

from keras_mixed_dim.layers.dot_interaction import DotInteraction
from keras_mixed_dim.layers.mixed_dim_embedding import MixedDimEmbedding
from keras_mixed_dim.layers.quantized_mixed_dim_embedding import (
    QuantizedMixedDimEmbedding,
)

__all__ = ["DotInteraction", "MixedDimEmbedding", "QuantizedMixedDimEmbedding"]
