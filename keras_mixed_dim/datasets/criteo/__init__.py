"""Criteo Kaggle (Display Advertising Challenge) data.

numpy modules: `format` (the raw TAB format), `vocabulary` (counting pass,
ranked bounded vocabularies), `synthetic` (Criteo-like rows at the Kaggle
cardinalities). TensorFlow-only modules, imported by name: `pipeline`
(tf.data and the in-graph lookup shared with serving), `tfds` (a
tensorflow-datasets builder).
"""

from keras_mixed_dim.datasets.criteo.format import CATEGORICAL_NAMES
from keras_mixed_dim.datasets.criteo.format import DENSE_NAMES
from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES
from keras_mixed_dim.datasets.criteo.format import NUM_CATEGORICAL
from keras_mixed_dim.datasets.criteo.format import NUM_DENSE
from keras_mixed_dim.datasets.criteo.format import transform_dense
from keras_mixed_dim.datasets.criteo.synthetic import MLPERF_MULTI_HOT_SIZES
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo
from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary
from keras_mixed_dim.datasets.criteo.vocabulary import build_or_load_vocabulary
from keras_mixed_dim.datasets.criteo.vocabulary import count_values

__all__ = [
    "CATEGORICAL_NAMES",
    "CriteoVocabulary",
    "DENSE_NAMES",
    "KAGGLE_CARDINALITIES",
    "MLPERF_MULTI_HOT_SIZES",
    "NUM_CATEGORICAL",
    "NUM_DENSE",
    "SyntheticCriteo",
    "build_or_load_vocabulary",
    "count_values",
    "transform_dense",
]
