"""Datasets, one package per dataset: `criteo` and `movielens`.

Each keeps its numpy code importable on every Keras backend; modules that
need TensorFlow (`*.pipeline`, `*.tfds`) are imported by name only.
"""

from keras_mixed_dim.datasets.movielens import Ratings
from keras_mixed_dim.datasets.movielens import Vocabulary
from keras_mixed_dim.datasets.movielens import read_ratings
from keras_mixed_dim.datasets.movielens import split_by_time
from keras_mixed_dim.datasets.movielens import split_random
from keras_mixed_dim.datasets.movielens import synthetic_ratings

__all__ = [
    "Ratings",
    "Vocabulary",
    "read_ratings",
    "split_by_time",
    "split_random",
    "synthetic_ratings",
]
