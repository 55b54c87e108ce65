"""Dimension planning for mixed-dimension embeddings (numpy only, no Keras)."""

from keras_mixed_dim.planning.blocks import block_dims
from keras_mixed_dim.planning.blocks import equal_mass_boundaries
from keras_mixed_dim.planning.blocks import plan_blocks
from keras_mixed_dim.planning.blocks import rank_ids
from keras_mixed_dim.planning.blocks import ranks_of_ids
from keras_mixed_dim.planning.blocks import zipf_counts
from keras_mixed_dim.planning.plan import Block
from keras_mixed_dim.planning.plan import BlockPlan
from keras_mixed_dim.planning.solver import alpha_power_rule
from keras_mixed_dim.planning.solver import md_solver
from keras_mixed_dim.planning.solver import round_to_power_of_two

__all__ = [
    "Block",
    "BlockPlan",
    "alpha_power_rule",
    "block_dims",
    "equal_mass_boundaries",
    "md_solver",
    "plan_blocks",
    "rank_ids",
    "ranks_of_ids",
    "round_to_power_of_two",
    "zipf_counts",
]
