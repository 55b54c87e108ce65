"""read_embedding_rows: keras.layers.Embedding tables read by rows on TensorFlow,
and given sparse row gradients by a SparseRowOptimizer on JAX and PyTorch."""

import warnings

import keras
import numpy as np
import pytest

from keras_mixed_dim import IdSafeModel
from keras_mixed_dim.backend.row_gradients import RowGradient
from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer
from keras_mixed_dim.optimizers.sparse_rows import sparse_row_value_and_grad
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


def test_only_plain_embeddings_change():
    keras.utils.set_random_seed(0)
    ids = keras.Input(shape=(3,), dtype="int32")

    class OwnEmbedding(keras.layers.Embedding):
        pass

    outputs = [keras.layers.Embedding(50, 4, name="table")(ids),
               OwnEmbedding(50, 4, name="own")(ids)]
    model = keras.Model(ids, outputs)
    changed = read_embedding_rows(model)
    assert [layer.name for layer in changed] == ["table"]
    # a second call leaves the changed layers as they are
    assert read_embedding_rows(model) == []


def test_keras_semantics_kept_negative_ids_and_mask_zero():
    keras.utils.set_random_seed(0)
    layer = keras.layers.Embedding(6, 3, mask_zero=True)
    layer.build()
    reference = keras.layers.Embedding(6, 3, mask_zero=True)
    reference.build()
    reference.set_weights(layer.get_weights())
    model = keras.Sequential([keras.Input((4,), dtype="int32"), layer])
    assert read_embedding_rows(model) == [layer]
    ids = keras.ops.convert_to_tensor(np.array([[0, 5, -1, -6], [2, 2, 0, 1]], "int32"))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(ids)),
                                  keras.ops.convert_to_numpy(reference(ids)))
    table = keras.ops.convert_to_numpy(layer.embeddings)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(ids))[0, 2], table[5])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.compute_mask(ids)),
                                  np.array([[0, 1, 1, 1], [1, 1, 0, 1]], bool))


ROW_IDS = np.array([[3, 3, -1], [49, 0, 7], [7, 3, 8], [12, 5, 3]], "int32")
ROW_Y = np.array([[1.0], [0.0], [1.0], [0.0]], "float32")
LOOKED_UP = sorted({3, 49, 0, 7, 8, 12, 5})


def sparse_table_gradient(model):
    """Whether the backend's row path gives `model`'s table a row gradient
    (PyTorch: a sparse `.grad` after Keras's own step; JAX: a `RowGradient`
    with no dense part from the row step's gradients)."""
    table = model.get_layer("table").embeddings
    if keras.backend.backend() == "torch":
        return table.value.grad is not None and table.value.grad.is_sparse
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    metrics = [v.value for v in model.metrics_variables]
    _, grads = sparse_row_value_and_grad(model)(
        trainable, non_trainable, metrics, ROW_IDS, ROW_Y,
        optimizer_variables=[v.value for v in model.optimizer.variables])
    grad = grads[[id(v) for v in model.trainable_variables].index(id(table))]
    return isinstance(grad, RowGradient) and grad.dense is None


@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="TensorFlow's lookups give IndexedSlices already")
@pytest.mark.parametrize("cls", ["IdSafeModel", "keras.Model + read_embedding_rows"])
def test_embedding_tables_get_row_updates_equal_to_kerass_optimizer(cls):
    if cls != "IdSafeModel" and keras.backend.backend() == "jax":
        pytest.skip("on JAX the row step is IdSafeModel's (Keras's own step is dense)")
    ours = embedding_model(IdSafeModel if cls == "IdSafeModel" else keras.Model)
    read_embedding_rows(ours)
    theirs = embedding_model(keras.Model)
    theirs.set_weights(ours.get_weights())
    before = keras.ops.convert_to_numpy(ours.get_layer("table").embeddings).copy()
    ours.compile(SparseRowOptimizer(keras.optimizers.SGD(0.1), table_optimizer="sgd"),
                 "mse")
    theirs.compile(keras.optimizers.SGD(0.1), "mse")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*dense gradient")
        ours.fit(ROW_IDS, ROW_Y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    theirs.fit(ROW_IDS, ROW_Y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert sparse_table_gradient(ours)
    after = keras.ops.convert_to_numpy(ours.get_layer("table").embeddings)
    untouched = np.setdiff1d(np.arange(50), LOOKED_UP)
    np.testing.assert_array_equal(after[untouched], before[untouched])
    assert not np.array_equal(after[LOOKED_UP], before[LOOKED_UP])
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
