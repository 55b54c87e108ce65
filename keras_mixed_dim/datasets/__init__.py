"""Datasets: MovieLens readers, synthetic ratings, vocabularies and splits.

Modules that need TensorFlow (`tf_pipeline`, `movielens_tfds`) are imported
by name, not from here, so this package works on every Keras backend.
"""

from keras_mixed_dim.datasets.movielens import read_ratings
from keras_mixed_dim.datasets.ratings import Ratings
from keras_mixed_dim.datasets.ratings import Vocabulary
from keras_mixed_dim.datasets.ratings import split_by_time
from keras_mixed_dim.datasets.ratings import split_random
from keras_mixed_dim.datasets.synthetic_ratings import synthetic_ratings

__all__ = [
    "Ratings",
    "Vocabulary",
    "read_ratings",
    "split_by_time",
    "split_random",
    "synthetic_ratings",
]
