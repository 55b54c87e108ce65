"""`flag_table` marks tables unless already flagged; `RowGradient` holds a
table's gradient by rows and scales like the dense gradient it stands for."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.backend.row_gradients import SPARSE_ROWS_ATTRIBUTE
from keras_mixed_dim.backend.row_gradients import RowGradient
from keras_mixed_dim.backend.row_gradients import flag_table


def test_flag_table_flags_once_and_keeps_a_users_choice():
    table = keras.Variable(np.zeros((3, 2), "float32"))
    assert flag_table(table) is table
    assert getattr(table, SPARSE_ROWS_ATTRIBUTE) is True
    opted_out = keras.Variable(np.zeros((3, 2), "float32"))
    setattr(opted_out, SPARSE_ROWS_ATTRIBUTE, False)
    flag_table(opted_out)
    assert getattr(opted_out, SPARSE_ROWS_ATTRIBUTE) is False


def dense_of(gradient, shape):
    """The dense gradient a `RowGradient` stands for (numpy reference)."""
    dense = np.zeros(shape, "float32")
    if gradient.dense is not None:
        dense += ops.convert_to_numpy(gradient.dense)
    if gradient.has_rows:
        np.add.at(dense, ops.convert_to_numpy(gradient.indices),
                  ops.convert_to_numpy(gradient.values))
    return dense


def test_scaled_divides_rows_and_dense_part_alike():
    rng = np.random.default_rng(0)
    indices = np.array([2, 0, 2], "int32")
    values = rng.normal(size=(3, 2)).astype("float32")
    dense = rng.normal(size=(4, 2)).astype("float32")
    gradient = RowGradient(ops.convert_to_tensor(indices), ops.convert_to_tensor(values),
                           ops.convert_to_tensor(dense))
    scaled = gradient.scaled(4.0)
    np.testing.assert_allclose(dense_of(scaled, (4, 2)), dense_of(gradient, (4, 2)) / 4,
                               rtol=1e-6)
    only_dense = RowGradient(dense=ops.convert_to_tensor(dense)).scaled(2.0)
    assert not only_dense.has_rows and only_dense.values is None
    np.testing.assert_allclose(ops.convert_to_numpy(only_dense.dense), dense / 2, rtol=1e-6)


def test_indices_and_values_go_together():
    with pytest.raises(ValueError, match="go together"):
        RowGradient(indices=np.zeros((2,), "int32"))
    assert RowGradient(np.zeros((1,), "int32"), np.zeros((1, 2), "float32")).has_rows
