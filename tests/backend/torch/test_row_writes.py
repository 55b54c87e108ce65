"""PyTorch's row writes against numpy: only the named rows change, in
place (the same storage), outside autograd."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="a PyTorch-only module")


def table():
    return keras.Variable(np.arange(24, dtype="float32").reshape(6, 4))


def test_assign_rows_changes_only_the_named_rows_in_place():
    from keras_mixed_dim.backend.torch import row_writes

    variable = table()
    storage = variable.value.data_ptr()
    expected = keras.ops.convert_to_numpy(variable.value).copy()
    values = -np.ones((2, 4), "float32")
    row_writes.assign_rows(variable, [4, 1], values)
    expected[[4, 1]] = values
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), expected)
    assert variable.value.data_ptr() == storage
    np.testing.assert_array_equal(row_writes.read_rows(variable, [1, 5]), expected[[1, 5]])


def test_write_rows_with_tensors_stays_outside_autograd():
    import torch

    from keras_mixed_dim.backend.torch import row_writes

    variable = table()
    expected = keras.ops.convert_to_numpy(variable.value).copy()
    values = torch.tensor([[7.0] * 4, [8.0] * 4], requires_grad=True)
    row_writes.write_rows(variable, torch.tensor([0, 5]), values)
    expected[0], expected[5] = 7.0, 8.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), expected)
    assert variable.value.grad_fn is None
    assert row_writes.WRITES_IN_LAYER and row_writes.MAP_AHEAD


def test_concrete_writes():
    import torch
    from keras.src.backend.common.symbolic_scope import SymbolicScope

    from keras_mixed_dim.backend.torch import row_writes

    # the layer picks a batch's writes on the host only from real values:
    # a symbolic call's placeholders would write rows that no batch named
    writes = torch.arange(8, dtype=torch.int32).reshape(1, 1, 2, 4)
    np.testing.assert_array_equal(row_writes.concrete_writes(writes), writes.numpy())
    with SymbolicScope():
        assert row_writes.concrete_writes(writes) is None
    assert row_writes.concrete_writes(torch.ones(1, 1, 2, 4, device="meta")) is None
