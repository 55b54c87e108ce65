"""Optimizer wrappers and helpers for memory-efficient training of dense towers."""

from keras_mixed_dim.optimizers.dense_memory import dense_memory_options
from keras_mixed_dim.optimizers.low_rank_gradients import LowRankGradients

__all__ = ["LowRankGradients", "dense_memory_options"]
