"""read_embedding_rows: keras.layers.Embedding tables read by rows on TensorFlow."""

import keras
import numpy as np
import pytest

from keras_mixed_dim import IdSafeModel
from keras_mixed_dim.models.row_reads import read_embedding_rows

tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="the row read is TensorFlow's")


def embedding_model(cls):
    keras.utils.set_random_seed(0)
    ids = keras.Input(shape=(3,), dtype="int32")
    vectors = keras.layers.Embedding(50, 4, name="table")(ids)
    return cls(ids, keras.layers.Dense(1)(keras.layers.Flatten()(vectors)))


@tensorflow_only
def test_the_lookup_gathers_on_the_variable_without_reading_the_table():
    import tensorflow as tf

    layer = embedding_model(IdSafeModel).get_layer("table")
    graph = tf.function(lambda ids: layer(ids)).get_concrete_function(
        tf.TensorSpec((None, 3), tf.int32)).graph
    types = {op.type for op in graph.get_operations()}
    assert "ResourceGather" in types
    # Keras's own lookup reads the whole table first (copied on every read
    # once rows were updated in place)
    assert "ReadVariableOp" not in types


@tensorflow_only
def test_values_and_sgd_updates_equal_kerass_own_lookup():
    ours, theirs = embedding_model(IdSafeModel), embedding_model(keras.Model)
    theirs.set_weights(ours.get_weights())
    # duplicates and negative ids (which count from the end, as ops.take's)
    ids = np.array([[3, 3, -1], [49, 0, -50], [7, 3, 8]], "int32")
    y = np.array([[1.0], [0.0], [1.0]], "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours(ids)),
                                  keras.ops.convert_to_numpy(theirs(ids)))
    before = keras.ops.convert_to_numpy(ours.get_layer("table").embeddings).copy()
    for model in (ours, theirs):
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.train_on_batch(ids, y)
        model.train_on_batch(ids, y)
    after = keras.ops.convert_to_numpy(ours.get_layer("table").embeddings)
    assert not np.array_equal(after[3], before[3])
    np.testing.assert_array_equal(after[1], before[1])  # not looked up
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_only_plain_embeddings_on_tensorflow_change():
    model = embedding_model(keras.Model)
    changed = read_embedding_rows(model)
    expected = ["table"] if keras.backend.backend() == "tensorflow" else []
    assert [layer.name for layer in changed] == expected
    # a second call leaves the changed layers as they are
    assert read_embedding_rows(model) == []
