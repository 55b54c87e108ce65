"""Frequency counting and re-ranking of mixed-dimension embeddings."""

from keras_mixed_dim.frequency.callback import FrequencyRecount
from keras_mixed_dim.frequency.rerank import RerankReport
from keras_mixed_dim.frequency.rerank import block_masses
from keras_mixed_dim.frequency.rerank import rerank_layer
from keras_mixed_dim.frequency.stacked import replan_stacked
from keras_mixed_dim.frequency.stacked import rerank_stacked

__all__ = ["FrequencyRecount", "RerankReport", "block_masses", "replan_stacked",
           "rerank_layer", "rerank_stacked"]
