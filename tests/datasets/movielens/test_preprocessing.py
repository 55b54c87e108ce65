"""MovieLensPreprocessing: raw user / item ids -> the indices the models
take, as `Vocabulary.lookup` gives them in training (rank in the
vocabulary, unknown ids -> the OOV index), and the model check."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixed_dim.datasets.movielens.preprocessing import MovieLensPreprocessing


def lookup(vocabulary, raw):
    """The documented mapping: index in the vocabulary, else its length."""
    index = {v: i for i, v in enumerate(vocabulary)}
    return np.array([index.get(v, len(vocabulary)) for v in raw], np.int32)


@pytest.mark.parametrize("users,items,raw_users,raw_items", [
    ([10, 30, 20], [7, 8], [20, 10, 99, 30], [8, 8, 7, -1]),
    (["u2", "u1"], ["i1", "i3", "i2"], ["u1", "zz", "u2", ""], ["i2", "i3", "i9", "i1"]),
], ids=["int64", "string"])
def test_raw_ids_map_to_vocabulary_ranks_and_unknowns_to_the_oov_index(
        users, items, raw_users, raw_items):
    preprocess = MovieLensPreprocessing(users, items)
    assert preprocess.sizes == {"user": len(users) + 1, "item": len(items) + 1}
    dtype = preprocess.input_signature["user_id"].dtype
    out = preprocess({"user_id": tf.constant(raw_users, dtype),
                      "item_id": tf.constant(raw_items, dtype)})
    assert out["user"].dtype == tf.int32 and out["item"].dtype == tf.int32
    np.testing.assert_array_equal(out["user"].numpy(), lookup(users, raw_users))
    np.testing.assert_array_equal(out["item"].numpy(), lookup(items, raw_items))


def mf_model(user_rows, item_rows):
    user, item = keras.Input((1,), dtype="int32"), keras.Input((1,), dtype="int32")
    u = keras.layers.Embedding(user_rows, 2, name="user_embedding")(user)
    i = keras.layers.Embedding(item_rows, 2, name="item_embedding")(item)
    return keras.Model([user, item], keras.layers.Dot(axes=-1)([u, i]))


def test_check_model_names_the_table_whose_size_does_not_match():
    preprocess = MovieLensPreprocessing([1, 2, 3], [5, 6])
    preprocess.check_model(mf_model(4, 3))  # ids plus the OOV index: fits
    with pytest.raises(ValueError, match="item vocabulary has 3 indices.*'item_embedding' "
                                         "has 4 rows"):
        preprocess.check_model(mf_model(4, 4))
    preprocess.check_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
