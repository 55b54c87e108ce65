"""Compressing trained models: uniform -> mixed-dimension conversion and
quantized tables for serving."""

from keras_mixed_dim.compress.convert import mixed_dim_from_embedding
from keras_mixed_dim.compress.model import COMPRESSION_METHODS
from keras_mixed_dim.compress.model import CompressionReport
from keras_mixed_dim.compress.model import LayerCompression
from keras_mixed_dim.compress.model import compress_model
from keras_mixed_dim.compress.model import embedding_layers
from keras_mixed_dim.compress.model import register_method
from keras_mixed_dim.compress.quantize import QuantizedMixedDimEmbedding
from keras_mixed_dim.compress.quantize import QuantizedStackedEmbedding
from keras_mixed_dim.compress.quantize import quantize_layer
from keras_mixed_dim.compress.quantize import quantize_model
from keras_mixed_dim.compress.quantize import quantize_rows
from keras_mixed_dim.compress.quantize import weight_bytes
from keras_mixed_dim.planning.convert import BlockReport
from keras_mixed_dim.planning.convert import ConversionReport
from keras_mixed_dim.planning.convert import convert_weights

__all__ = [
    "BlockReport",
    "COMPRESSION_METHODS",
    "CompressionReport",
    "LayerCompression",
    "compress_model",
    "embedding_layers",
    "register_method",
    "ConversionReport",
    "convert_weights",
    "QuantizedMixedDimEmbedding",
    "QuantizedStackedEmbedding",
    "mixed_dim_from_embedding",
    "quantize_layer",
    "quantize_model",
    "quantize_rows",
    "weight_bytes",  # deprecated: keras_mixed_dim.embedding_bytes
]
