"""`keras_mixed_dim.backend`: each choice is the running backend's version
or the portable one, `require` refuses other backends by name, and
`take_rows` reads the rows `ops.take` would."""

import importlib

import keras
import numpy as np
import pytest
from keras import ops

import keras_mixed_dim.backend as backend
from keras_mixed_dim.backend import portable

CHOICES = ("dense_gradient", "residual_gradient", "take_columns", "split_columns",
           "is_ragged_or_sparse", "padded_bags", "saturating_scatter_add",
           "divide_gradient", "model_variable_scope", "SUPPORTS_RAGGED_IDS",
           "take_rows", "ROW_OPS",
           "arm_row_step", "DENSE_TABLE_GRADIENT_ADVICE",
           "attach_row_optimizer", "has_distribution_strategy", "table_gradient",
           "sparse_gradient_rows", "update_tables", "row_value_and_grad",
           "row_train_step")


def test_each_choice_is_the_backend_folder_version_else_portable():
    assert backend.NAME == keras.backend.backend()
    folder = importlib.import_module(f"keras_mixed_dim.backend.{backend.NAME}.ops")
    for name in CHOICES:
        expected = getattr(folder, name, getattr(portable, name))
        assert getattr(backend, name) is expected, name
    assert backend.backend_module("ops") is folder


def test_require_names_both_backends():
    backend.require(backend.NAME, "Anything")
    other = "jax" if backend.NAME != "jax" else "torch"
    with pytest.raises(RuntimeError, match=f"needs the '{other}' backend.*runs '{backend.NAME}'. Try"):
        backend.require(other, "A thing", RuntimeError, hint="Try.")


def test_take_rows_reads_the_rows_of_a_table_variable():
    values = np.arange(15, dtype="float32").reshape(5, 3)
    table = keras.Variable(values)
    rows = np.array([[4, 0], [2, 2]], dtype="int32")
    np.testing.assert_array_equal(ops.convert_to_numpy(backend.take_rows(table, rows)),
                                  values[rows])
