"""load_tfds: a tfds MovieLens ratings config read into `Ratings` (tfds's
loader stubbed with in-memory columns: the tests run offline)."""

import numpy as np
import pytest

from keras_mixed_dim.datasets.movielens.tfds import load_tfds

tfds = pytest.importorskip("tensorflow_datasets",
                           reason="load_tfds needs the [datasets] extra")


def test_the_columns_become_ratings(monkeypatch):
    columns = {"user_id": np.array([b"1", b"2"]), "movie_id": np.array([b"10", b"20"]),
               "user_rating": np.array([4.0, 2.5], np.float64),
               "timestamp": np.array([5, 6], np.int32), "user_gender": np.array([1, 0])}
    calls = []

    def load(name, **kwargs):
        calls.append((name, kwargs))
        return columns

    monkeypatch.setattr(tfds, "load", load)
    monkeypatch.setattr(tfds, "as_numpy", lambda dataset: dataset)
    ratings = load_tfds("movielens/1m-ratings", data_dir="/d")
    assert calls == [("movielens/1m-ratings",
                      {"split": "train", "data_dir": "/d", "batch_size": -1})]
    np.testing.assert_array_equal(ratings.users, [b"1", b"2"])
    np.testing.assert_array_equal(ratings.items, [b"10", b"20"])
    assert ratings.ratings.dtype == np.float32 and ratings.timestamps.dtype == np.int64
    np.testing.assert_array_equal(ratings.ratings, [4.0, 2.5])
    np.testing.assert_array_equal(ratings.timestamps, [5, 6])


def test_bad_names_and_load_failures_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="'movielens/100k-movies'"):
        load_tfds("movielens/100k-movies")

    def offline(name, **kwargs):
        raise OSError("no connection")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(RuntimeError, match="could not load 'movielens/100k-ratings' "
                                           r"\(OSError: no connection\)"):
        load_tfds()
