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
