"""The `keras.ops` versions of the backend choices, on every backend,
against numpy (gradients through each framework's own autodiff)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.backend import portable


def gradient(fn, x):
    """d sum(fn(x)) / dx, as numpy, through the running backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(fn(x))
        # a gather's gradient is `IndexedSlices`
        return tf.convert_to_tensor(tape.gradient(total, x)).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: fn(v).sum())(x))
    import torch

    x = torch.tensor(x, requires_grad=True)
    fn(x).sum().backward()
    return x.grad.numpy()


def test_take_and_split_columns_match_numpy():
    x = np.arange(24, dtype="float32").reshape(2, 3, 4)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(portable.take_columns(ops.convert_to_tensor(x), [3, 0, 3])),
        np.take(x, [3, 0, 3], axis=-1))
    np.testing.assert_array_equal(
        ops.convert_to_numpy(portable.take_columns(ops.convert_to_tensor(x), [2], axis=1)),
        np.take(x, [2], axis=1))
    parts = portable.split_columns(ops.convert_to_tensor(x), [1, 3])
    for part, expected in zip(parts, np.split(x, [1], axis=-1), strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(part), expected)


def test_residual_gradient_uses_the_given_backward():
    x = np.array([1.0, -2.0, 3.0], dtype="float32")

    def forward(v):
        return v * v, (v, None)

    def backward(upstream, residuals):
        assert residuals[1] is None
        return (3.0 * residuals[0] * upstream,)   # not the true 2x: it must be used

    y = portable.residual_gradient(forward, backward, ops.convert_to_tensor(x))
    np.testing.assert_allclose(ops.convert_to_numpy(y), x * x)
    np.testing.assert_allclose(
        gradient(lambda v: portable.residual_gradient(forward, backward, v), x), 3.0 * x)


def test_a_missing_gradient_is_zeros():
    x = np.array([1.0, 2.0], dtype="float32")
    w = ops.convert_to_tensor(np.array([5.0, 7.0], dtype="float32"))
    grad = gradient(lambda v: portable.residual_gradient(
        lambda a, b: (a * b, (b,)), lambda up, res: (None, up * res[0]), v, w), x)
    np.testing.assert_array_equal(grad, np.zeros(2))


def test_what_only_tensorflow_has_is_absent_here():
    assert portable.SUPPORTS_RAGGED_IDS is False
    assert portable.is_ragged_or_sparse(ops.ones((2, 2))) is False
    with pytest.raises(ValueError, match="Layer 'tags' got ragged"):
        portable.padded_bags(ops.ones((2, 2), "int32"), None, 3, layer_name="tags")
    counts = keras.Variable(np.array([1, 2], dtype="int32"), dtype="int32", trainable=False)
    assert portable.saturating_scatter_add(counts, [0], [5]) is False
    np.testing.assert_array_equal(ops.convert_to_numpy(counts), [1, 2])
    with portable.model_variable_scope(keras.Sequential()) as scope:
        assert scope is None


def test_divide_gradient_divides():
    grad = np.array([[2.0, -4.0]], dtype="float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(portable.divide_gradient(ops.convert_to_tensor(grad), 4.0)),
        grad / 4.0)


# -- `DynamicEmbedding`'s lookup: operands known to be in range ---------------

def test_count_bounds_reached_is_numpy_digitize_on_and_beside_the_bounds():
    x = np.array([[0, 4, 5, 6], [11, 12, 13, 40]], "int32")
    for bounds in ([], [5], [5, 12]):
        got = portable.count_bounds_reached(ops.convert_to_tensor(x), bounds)
        assert ops.dtype(got) == "int32"
        np.testing.assert_array_equal(ops.convert_to_numpy(got), np.digitize(x, bounds))


def test_nonnegative_divmod_is_numpy_divmod():
    x = np.arange(0, 50, dtype="int32").reshape(5, 10)
    quotient, remainder = portable.nonnegative_divmod(ops.convert_to_tensor(x), 7)
    np.testing.assert_array_equal(ops.convert_to_numpy(quotient), x // 7)
    np.testing.assert_array_equal(ops.convert_to_numpy(remainder), x % 7)


def test_take_rows_in_range_gives_the_rows_and_sums_their_gradient():
    values = np.arange(12, dtype="float32").reshape(4, 3)
    rows = np.array([[3, 0], [3, 1]], "int32")
    got = portable.take_rows_in_range(ops.convert_to_tensor(values), rows)
    np.testing.assert_array_equal(ops.convert_to_numpy(got), values[rows])
    counts = np.bincount(rows.ravel(), minlength=4).astype("float32")
    np.testing.assert_array_equal(
        gradient(lambda v: portable.take_rows_in_range(v, rows), values),
        np.repeat(counts[:, None], 3, axis=1))


def test_equals_columns_is_numpy_equal_against_each_column():
    values = np.array([[0, 3, 1], [2, 2, 4]], "int32")
    columns = np.array([1, 1, 2, 3, 3, 3], "int32")
    got = portable.equals_columns(ops.convert_to_tensor(values), columns, 5)
    np.testing.assert_array_equal(ops.convert_to_numpy(got), values[..., None] == columns)
