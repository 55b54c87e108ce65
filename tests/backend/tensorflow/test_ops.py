"""TensorFlow's versions of the backend choices: the same values as the
portable ones and numpy, in fewer graph ops, and what only TensorFlow has
(ragged ids, `IndexedSlices` gradients, strategy scopes)."""

import keras
import numpy as np
import pytest

from keras_mixed_dim.backend import portable

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="a TensorFlow-only module")


@pytest.fixture(scope="module")
def tf_ops():
    from keras_mixed_dim.backend.tensorflow import ops

    return ops


def op_types(fn, x):
    import tensorflow as tf

    graph = tf.function(fn).get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph
    return [op.type for op in graph.get_operations()]


def test_columns_match_numpy_in_one_op(tf_ops):
    x = np.arange(24, dtype="float32").reshape(2, 3, 4)
    np.testing.assert_array_equal(tf_ops.take_columns(x, [3, 0, 3]).numpy(),
                                  np.take(x, [3, 0, 3], axis=-1))
    for part, expected in zip(tf_ops.split_columns(x, [1, 2, 1]),
                              np.split(x, [1, 3], axis=-1), strict=True):
        np.testing.assert_array_equal(part.numpy(), expected)
    take = op_types(lambda t: tf_ops.take_columns(t, [3, 0]), x)
    assert take.count("GatherV2") == 1
    assert len(take) < len(op_types(lambda t: portable.take_columns(t, [3, 0]), x))
    split = op_types(lambda t: tf_ops.split_columns(t, [1, 3]), x)
    assert split.count("SplitV") == 1
    assert len(split) < len(op_types(lambda t: portable.split_columns(t, [1, 3]), x))


def test_residual_gradient_reaches_a_variable_operand(tf_ops):
    import tensorflow as tf

    table = tf.Variable([1.0, -2.0, 3.0])
    with tf.GradientTape() as tape:
        y = tf_ops.residual_gradient(lambda v: (v * v, (v,)),
                                     lambda up, res: (3.0 * res[0] * up,), table)
        total = tf.reduce_sum(y)
    np.testing.assert_allclose(y.numpy(), [1.0, 4.0, 9.0])
    np.testing.assert_allclose(tape.gradient(total, table).numpy(), [3.0, -6.0, 9.0])


def test_ragged_sparse_and_indexed_slices(tf_ops):
    import tensorflow as tf

    assert tf_ops.SUPPORTS_RAGGED_IDS
    assert tf_ops.is_ragged_or_sparse(tf.ragged.constant([[1], [2, 3]]))
    assert tf_ops.is_ragged_or_sparse(tf.sparse.from_dense([[0, 1]]))
    assert not tf_ops.is_ragged_or_sparse(tf.constant([[0, 1]]))
    slices = tf.IndexedSlices(tf.constant([[2.0, 4.0]]), tf.constant([3]), tf.constant([5, 2]))
    divided = tf_ops.divide_gradient(slices, 2.0)
    assert isinstance(divided, tf.IndexedSlices)
    np.testing.assert_array_equal(tf.convert_to_tensor(divided).numpy(),
                                  tf.convert_to_tensor(slices).numpy() / 2.0)
    np.testing.assert_array_equal(tf_ops.divide_gradient(tf.constant([4.0]), 2.0).numpy(), [2.0])


def test_saturating_scatter_add_stops_at_the_int32_maximum(tf_ops):
    top = np.iinfo(np.int32).max
    counts = keras.Variable(np.array([top - 1, 5, 0], dtype="int32"), dtype="int32",
                            trainable=False)
    assert tf_ops.saturating_scatter_add(counts, [0, 0, 0, 1], [1, 1, 1, 2]) is True
    np.testing.assert_array_equal(counts.numpy(), [top, 7, 0])


def test_model_variable_scope_is_the_model_strategy(tf_ops):
    import tensorflow as tf

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with tf_ops.model_variable_scope(model):
        assert tf.distribute.get_strategy() is strategy
    with tf_ops.model_variable_scope(object()):
        assert not tf.distribute.has_strategy()


def test_the_backend_package_chose_these(tf_ops):
    import keras_mixed_dim.backend as backend

    for name in ("take_columns", "split_columns", "residual_gradient",
                 "divide_gradient", "model_variable_scope", "take_rows",
                 "update_tables", "ROW_OPS"):
        assert getattr(backend, name) is getattr(tf_ops, name), name


def test_count_bounds_reached_is_numpy_digitize_in_one_op(tf_ops):
    import tensorflow as tf

    x = np.array([[0, 4, 5, 6], [11, 12, 13, 40]], "int32")
    for bounds in ([], [5], [5, 12]):
        got = tf_ops.count_bounds_reached(tf.constant(x), bounds)
        assert got.dtype == tf.int32
        np.testing.assert_array_equal(got.numpy(), np.digitize(x, bounds))
    graph = tf.function(lambda v: tf_ops.count_bounds_reached(v, [5, 12])).get_concrete_function(
        tf.TensorSpec(x.shape, tf.int32)).graph
    kinds = [op.type for op in graph.get_operations()]
    assert [k for k in kinds if k not in ("Placeholder", "Const", "Identity")] == ["Bucketize"]


def test_count_bounds_reached_is_exact_beyond_float32_integers(tf_ops):
    """`Bucketize` compares in float32: 2**25 - 1 rounds up to a bound of
    2**25 and 2**24 + 1 rounds down to 2**24, so a slot beside a large tier
    bound would be counted in the next tier."""
    import tensorflow as tf

    for bounds in ([2 ** 24 + 1], [2 ** 24, 2 ** 25], [5, 2 ** 25 + 2]):
        x = np.array([b + d for b in bounds for d in (-2, -1, 0, 1)], "int32")
        got = tf_ops.count_bounds_reached(tf.constant(x), bounds)
        np.testing.assert_array_equal(got.numpy(), np.digitize(x, bounds))


def test_equals_columns_is_numpy_equal_in_one_gather(tf_ops):
    import tensorflow as tf

    values = np.array([[0, 3, 1], [2, 2, 4]], "int32")
    columns = np.array([1, 1, 2, 3, 3, 3], "int32")
    got = tf_ops.equals_columns(tf.constant(values), columns, 5)
    np.testing.assert_array_equal(got.numpy(), values[..., None] == columns)
    graph = tf.function(lambda v: tf_ops.equals_columns(v, columns, 5)).get_concrete_function(
        tf.TensorSpec(values.shape, tf.int32)).graph
    kinds = [op.type for op in graph.get_operations()]
    assert [k for k in kinds if k not in ("Placeholder", "Const", "Identity")] == ["GatherV2"]
