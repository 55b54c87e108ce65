"""Oblivious L2 subspace sketches and sketched PCA (numpy only, no Keras).

Gaussian, OSNAP and CountSketch sketches of tall matrices streamed in row
chunks, the fixed-dimension subspace embedding of Magdon-Ismail and Gittens
(arXiv:1909.12580), its measured distortion, and rank-`k` PCA factorizations
that use them for matrices too tall to decompose exactly.
"""

from keras_mixed_dim.sketch.pca import MAX_ERROR_RATIO
from keras_mixed_dim.sketch.pca import LowRank
from keras_mixed_dim.sketch.pca import low_rank
from keras_mixed_dim.sketch.pca import principal_directions
from keras_mixed_dim.sketch.sketches import CHUNK_ROWS
from keras_mixed_dim.sketch.sketches import KINDS
from keras_mixed_dim.sketch.sketches import default_sketch_rows
from keras_mixed_dim.sketch.sketches import distortion
from keras_mixed_dim.sketch.sketches import gram
from keras_mixed_dim.sketch.sketches import sketch
from keras_mixed_dim.sketch.sketches import subspace_embedding

__all__ = [
    "CHUNK_ROWS",
    "KINDS",
    "LowRank",
    "MAX_ERROR_RATIO",
    "default_sketch_rows",
    "distortion",
    "gram",
    "low_rank",
    "principal_directions",
    "sketch",
    "subspace_embedding",
]
