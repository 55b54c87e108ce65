"""Keras layers of keras-mixed-dim (importing this registers them for loading)."""

from keras_mixed_dim.layers.approx_activation_dense import ApproxActivationDense
from keras_mixed_dim.layers.approx_activation_dense import approximate_activations
from keras_mixed_dim.layers.dot_interaction import DotInteraction
from keras_mixed_dim.layers.dynamic_embedding import DynamicEmbedding
from keras_mixed_dim.layers.hashed_memory_embedding import HashedMemoryEmbedding
from keras_mixed_dim.layers.hashed_memory_embedding import SharedMemory
from keras_mixed_dim.layers.hashed_memory_embedding import lsh_signatures
from keras_mixed_dim.layers.hashing_embedding import HashingEmbedding
from keras_mixed_dim.layers.mixed_dim_embedding import MixedDimEmbedding
from keras_mixed_dim.layers.qr_embedding import QREmbedding
from keras_mixed_dim.layers.quantized_mixed_dim_embedding import (
    QuantizedMixedDimEmbedding,
)
from keras_mixed_dim.layers.quantized_stacked_embedding import QuantizedStackedEmbedding
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding

__all__ = [
    "ApproxActivationDense",
    "DotInteraction",
    "DynamicEmbedding",
    "HashedMemoryEmbedding",
    "HashingEmbedding",
    "MixedDimEmbedding",
    "QREmbedding",
    "QuantizedMixedDimEmbedding",
    "QuantizedStackedEmbedding",
    "SharedMemory",
    "StackedEmbedding",
    "approximate_activations",
    "lsh_signatures",
]
