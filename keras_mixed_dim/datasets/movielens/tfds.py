"""MovieLens through tensorflow-datasets (TensorFlow-only module).

Needs `pip install "keras-mixed-dim[datasets]"` and a connection the first
time (tfds downloads and prepares the data); later runs read its cache.
"""

import numpy as np

from keras_mixed_dim.datasets.movielens.ratings import Ratings


def load_tfds(name="movielens/100k-ratings", data_dir=None):
    """Reads a `movielens/*-ratings` tfds dataset into `Ratings`.

    Args:
        name: A tfds MovieLens ratings config, e.g. `movielens/1m-ratings`.
        data_dir: Optional tfds data folder.

    Raises:
        ImportError: tensorflow-datasets is not installed.
        RuntimeError: The dataset could not be downloaded or prepared.
    """
    if not name.startswith("movielens/") or not name.endswith("-ratings"):
        raise ValueError(
            f"Expected a tfds MovieLens ratings config such as "
            f"'movielens/100k-ratings'. Received: {name!r}"
        )
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "Reading MovieLens through tfds needs tensorflow-datasets: "
            'pip install "keras-mixed-dim[datasets]"'
        ) from error
    try:
        dataset = tfds.load(name, split="train", data_dir=data_dir, batch_size=-1)
    except Exception as error:  # download / preparation failures vary by version
        raise RuntimeError(
            f"tfds could not load {name!r} ({type(error).__name__}: {error}). "
            "Without a connection, pass a local MovieLens folder or zip instead."
        ) from error
    arrays = tfds.as_numpy(dataset)
    return Ratings(
        np.asarray(arrays["user_id"]),
        np.asarray(arrays["movie_id"]),
        np.asarray(arrays["user_rating"], dtype=np.float32),
        np.asarray(arrays["timestamp"], dtype=np.int64),
    )
