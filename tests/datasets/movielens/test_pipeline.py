"""ratings_dataset: the tf.data pipeline over in-memory rating arrays."""

import numpy as np
import pytest

from keras_mixed_dim.datasets.movielens.pipeline import ratings_dataset


def arrays(n=10):
    features = {"user": np.arange(n, dtype=np.int32), "item": np.arange(n, dtype=np.int32) * 2}
    return features, np.arange(n, dtype=np.float32) / 10


def test_batches_keep_rows_together_in_order():
    features, targets = arrays()
    batches = list(ratings_dataset(features, targets, batch_size=4).as_numpy_iterator())
    assert [len(t) for _, t in batches] == [4, 4, 2]
    users = np.concatenate([f["user"] for f, _ in batches])
    np.testing.assert_array_equal(users, features["user"])
    for f, t in batches:
        np.testing.assert_array_equal(f["item"], 2 * f["user"])
        np.testing.assert_allclose(t, f["user"] / 10)


def test_shuffle_reorders_each_epoch_and_keeps_every_row():
    features, targets = arrays(64)
    dataset = ratings_dataset(features, targets, batch_size=64, shuffle=True, seed=3)
    first, second = (next(dataset.as_numpy_iterator())[0]["user"] for _ in range(2))
    assert sorted(first) == sorted(second) == list(range(64))
    assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(64))


def test_a_batch_size_below_one_is_refused_naming_it():
    with pytest.raises(ValueError, match="`batch_size` must be >= 1. Received: 0"):
        ratings_dataset(*arrays(), batch_size=0)
