"""JAX's row writes against numpy: only the named rows change, between
steps (from a host copy) and inside a stateless scope (a functional
scatter that lands in the scope, not in the variable)."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="a JAX-only module")


def table():
    return keras.Variable(np.arange(24, dtype="float32").reshape(6, 4))


def test_assign_rows_changes_only_the_named_rows():
    from keras_mixed_dim.backend.jax import row_writes

    variable = table()
    expected = np.array(variable.value)
    values = -np.ones((2, 4), "float32")
    row_writes.assign_rows(variable, [4, 1], values)
    expected[[4, 1]] = values
    np.testing.assert_array_equal(np.array(variable.value), expected)
    np.testing.assert_array_equal(row_writes.read_rows(variable, [1, 5]), expected[[1, 5]])


def test_write_rows_in_a_stateless_scope_leaves_the_variable_alone():
    from keras.src.backend.common.stateless_scope import StatelessScope

    from keras_mixed_dim.backend.jax import row_writes

    variable = table()
    before = np.array(variable.value)
    with StatelessScope(state_mapping=[(variable, variable.value)]) as scope:
        row_writes.write_rows(variable, keras.ops.convert_to_tensor([0, 5]),
                              keras.ops.convert_to_tensor([[7.0] * 4, [8.0] * 4]))
    expected = before.copy()
    expected[0], expected[5] = 7.0, 8.0
    np.testing.assert_array_equal(np.array(scope.get_current_value(variable)), expected)
    np.testing.assert_array_equal(np.array(variable.value), before)
    # the trainer keeps its own copy of the state: the installed step applies writes
    assert not row_writes.WRITES_IN_LAYER and row_writes.MAP_AHEAD
