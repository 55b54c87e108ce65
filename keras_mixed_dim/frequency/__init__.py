"""Frequency counting and re-ranking of mixed-dimension embeddings."""

from keras_mixed_dim.frequency.callback import FrequencyRecount
from keras_mixed_dim.frequency.rerank import RerankReport
from keras_mixed_dim.frequency.rerank import block_masses
from keras_mixed_dim.frequency.rerank import rerank_layer

__all__ = ["FrequencyRecount", "RerankReport", "block_masses", "rerank_layer"]
