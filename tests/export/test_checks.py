"""embedding_input_dims: the vocabulary sizes an export checks its
preprocessing against, from plain embedding layers and stacked features."""

import keras
import pytest

from keras_mixed_dim.export.checks import embedding_input_dims
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding


def model_with_tables():
    ids = keras.Input((1,), dtype="int32")
    pair = keras.Input((2,), dtype="int32")
    users = keras.layers.Flatten()(keras.layers.Embedding(7, 4, name="users")(ids))
    stacked = keras.layers.Flatten()(
        StackedEmbedding([30, 11], 4, feature_names=["embedding_0", "embedding_1"],
                         name="stacked")(pair))
    out = keras.layers.Dense(1, name="out")(keras.layers.Concatenate()([users, stacked]))
    return keras.Model([ids, pair], out)


def test_sizes_of_layers_and_stacked_features_in_the_order_asked():
    model = model_with_tables()
    assert embedding_input_dims(model, ["embedding_1", "users", "embedding_0"]) == [
        11, 7, 30]
    assert embedding_input_dims(model, []) == []


def test_a_missing_or_non_embedding_layer_is_named():
    model = model_with_tables()
    with pytest.raises(ValueError, match="no layer 'items'"):
        embedding_input_dims(model, ["users", "items"])
    with pytest.raises(ValueError, match="'out' is not an embedding layer"):
        embedding_input_dims(model, ["out"])
