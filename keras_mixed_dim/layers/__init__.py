"""Keras layers of keras-mixed-dim."""

from keras_mixed_dim.layers.mixed_dim_embedding import MixedDimEmbedding

__all__ = ["MixedDimEmbedding"]
