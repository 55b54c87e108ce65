"""PyTorch's choices: `take_rows` is `ops.take` for a table without a row
optimizer, `attach_row_optimizer` ties tables to their optimizer weakly,
`table_gradient` turns a sparse `.grad` into rows."""

import gc
import weakref

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="a PyTorch-only module")


def test_take_rows_without_a_row_optimizer_is_ops_take():
    from keras_mixed_dim.backend.torch import ops as torch_ops

    values = np.arange(12, dtype="float32").reshape(4, 3)
    table = keras.Variable(values)
    rows = np.array([[3, 0], [1, -1]], "int32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(torch_ops.take_rows(table, rows)),
                                  keras.ops.convert_to_numpy(keras.ops.take(table, rows, axis=0)))


def test_attach_row_optimizer_holds_the_optimizer_weakly():
    from keras_mixed_dim.backend.torch import ops as torch_ops
    from keras_mixed_dim.backend.torch import sparse_rows

    class Optimizer:
        pass

    optimizer, table = Optimizer(), keras.Variable(np.zeros((2, 2), "float32"))
    torch_ops.attach_row_optimizer(optimizer, [table])
    owner = getattr(table, sparse_rows.OWNER_ATTRIBUTE)
    assert isinstance(owner, weakref.ref) and owner() is optimizer
    del optimizer
    gc.collect()
    assert owner() is None


def test_table_gradient_rows_dense_part_or_unchanged():
    import torch

    from keras_mixed_dim.backend.row_gradients import RowGradient
    from keras_mixed_dim.backend.torch import ops as torch_ops

    sparse = torch.sparse_coo_tensor(torch.tensor([[2, 0, 2]]), torch.ones((3, 2)), (4, 2),
                                     check_invariants=True)
    rows = torch_ops.table_gradient(sparse, armed=False)
    assert isinstance(rows, RowGradient) and rows.dense is None
    assert rows.indices.tolist() == [2, 0, 2]
    dense = torch.ones((4, 2))
    armed = torch_ops.table_gradient(dense, armed=True)
    assert isinstance(armed, RowGradient) and not armed.has_rows and armed.dense is dense
    assert torch_ops.table_gradient(dense, armed=False) is dense
