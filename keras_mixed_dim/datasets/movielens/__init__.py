"""MovieLens ratings.

numpy modules: `readers` (ml-100k .. ml-25m from a folder, file or zip),
`ratings` (`Ratings`, frequency-ranked `Vocabulary`, splits), `synthetic`
(Zipf low-rank ratings, the examples' embedded default). TensorFlow-only
modules, imported by name: `pipeline` (tf.data batches), `tfds`.
"""

from keras_mixed_dim.datasets.movielens.ratings import Ratings
from keras_mixed_dim.datasets.movielens.ratings import Vocabulary
from keras_mixed_dim.datasets.movielens.ratings import split_by_time
from keras_mixed_dim.datasets.movielens.ratings import split_random
from keras_mixed_dim.datasets.movielens.readers import read_ratings
from keras_mixed_dim.datasets.movielens.synthetic import synthetic_ratings

__all__ = [
    "Ratings",
    "Vocabulary",
    "read_ratings",
    "split_by_time",
    "split_random",
    "synthetic_ratings",
]
