"""JAX's choices: `take_rows` is `ops.take` outside the row step, and the
row step's pieces are `jax/sparse_rows.py`'s."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="a JAX-only module")


def test_take_rows_outside_the_row_step_is_ops_take():
    from keras_mixed_dim.backend.jax import ops as jax_ops

    values = np.arange(12, dtype="float32").reshape(4, 3)
    table = keras.Variable(values)
    rows = np.array([[3, 0], [1, 1]], "int32")
    np.testing.assert_array_equal(np.asarray(jax_ops.take_rows(table, rows)), values[rows])


def test_the_backend_package_chose_these():
    import keras_mixed_dim.backend as backend
    from keras_mixed_dim.backend.jax import ops as jax_ops
    from keras_mixed_dim.backend.jax import sparse_rows

    assert backend.take_rows is jax_ops.take_rows
    assert backend.ROW_OPS is sparse_rows
    assert backend.row_value_and_grad is sparse_rows.value_and_grad
    assert backend.row_train_step is sparse_rows.train_step
    assert "IdSafeModel" in backend.DENSE_TABLE_GRADIENT_ADVICE


# -- `DynamicEmbedding`'s lookup: operands known to be in range ---------------

def test_take_rows_in_range_equals_numpy_with_its_gradient():
    import jax

    from keras_mixed_dim.backend.jax import ops as jax_ops

    values = np.arange(12, dtype="float32").reshape(4, 3)
    rows = np.array([[3, 0], [3, 1]], "int32")
    table = keras.Variable(values)
    np.testing.assert_array_equal(np.asarray(jax_ops.take_rows_in_range(table, rows)),
                                  values[rows])
    grad = jax.jit(jax.grad(lambda v: (jax_ops.take_rows_in_range(v, rows) ** 2).sum()))(values)
    want = np.zeros_like(values)
    np.add.at(want, rows, 2 * values[rows])
    np.testing.assert_array_equal(np.asarray(grad), want)


def test_take_rows_in_range_is_the_row_steps_tapped_lookup_while_it_traces():
    # the row step takes a table's row gradients from its tapped lookups: a
    # read past the tap would leave those rows without their gradient
    from keras_mixed_dim.backend.jax import ops as jax_ops
    from keras_mixed_dim.backend.jax import sparse_rows

    class Tap:
        def take(self, table, rows):
            self.read = rows
            return "tapped"

    table, tap = keras.Variable(np.ones((4, 2), "float32")), Tap()
    rows = np.array([2, 0], "int32")
    with sparse_rows._Tapped([table], tap):
        assert jax_ops.take_rows_in_range(table, rows) == "tapped"
    np.testing.assert_array_equal(tap.read, rows)


def test_nonnegative_divmod_is_numpy_divmod():
    from keras_mixed_dim.backend.jax import ops as jax_ops

    x = np.arange(0, 50, dtype="int32")
    quotient, remainder = jax_ops.nonnegative_divmod(x, 7)
    assert quotient.dtype == remainder.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(quotient), x // 7)
    np.testing.assert_array_equal(np.asarray(remainder), x % 7)
