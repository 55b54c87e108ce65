"""Optimizers: sparse row updates for embedding tables, low-rank gradients
for the dense towers (importing this registers them for loading)."""

from keras_mixed_dim.optimizers.dense_memory import dense_memory_options
from keras_mixed_dim.optimizers.low_rank_gradients import LowRankGradients
from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer
from keras_mixed_dim.optimizers.sparse_rows import enable_sparse_row_steps
from keras_mixed_dim.optimizers.sparse_rows import is_embedding_table
from keras_mixed_dim.optimizers.sparse_rows import sparse_row_train_step
from keras_mixed_dim.optimizers.sparse_rows import sparse_row_value_and_grad

__all__ = [
    "LowRankGradients",
    "SparseRowOptimizer",
    "dense_memory_options",
    "enable_sparse_row_steps",
    "is_embedding_table",
    "sparse_row_train_step",
    "sparse_row_value_and_grad",
]
