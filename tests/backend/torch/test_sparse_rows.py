"""PyTorch's row lookup against autograd's own: the `_RowLookup` backward
gives a sparse `.grad` whose rows add up to the dense gradient in the
backward pass of a loss its optimizer armed, a dense one in any other pass;
and the row ops against numpy."""

import weakref

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="a PyTorch-only module")


class _Owner:
    armed_backward = None


@pytest.fixture
def rows_module():
    from keras_mixed_dim.backend.torch import sparse_rows

    return sparse_rows


def lookup_grad(rows_module, armed):
    import torch

    keras.utils.set_random_seed(0)
    table = keras.Variable(np.random.default_rng(0).normal(size=(6, 3)).astype("float32"))
    owner = _Owner()
    setattr(table, rows_module.OWNER_ATTRIBUTE, weakref.ref(owner))
    rows = torch.tensor([[4, 1], [4, 0]])
    upstream = torch.arange(12, dtype=torch.float32).reshape(2, 2, 3)
    out = rows_module.take_rows(table, rows)
    np.testing.assert_array_equal(out.detach().numpy(),
                                  table.value.detach().numpy()[rows.numpy()])
    loss = (out * upstream).sum()
    if armed:
        loss = rows_module.arm_row_step(owner, loss)
        assert loss.item() == (out * upstream).sum().item()
    loss.backward()
    # autograd's dense reference: the same lookup by plain indexing
    reference = table.value.detach().clone().requires_grad_(True)
    (reference[rows] * upstream).sum().backward()
    return table.value.grad, reference.grad


def test_an_armed_lookup_gives_a_sparse_grad_equal_to_the_dense_one(rows_module):
    grad, reference = lookup_grad(rows_module, armed=True)
    assert grad.is_sparse
    np.testing.assert_array_equal(grad.to_dense().numpy(), reference.numpy())
    rows, values = rows_module.row_gradient(grad)
    assert sorted(rows.tolist()) == [0, 1, 4, 4]  # duplicates kept, summed later


def test_an_unarmed_lookup_gives_the_dense_grad(rows_module):
    grad, reference = lookup_grad(rows_module, armed=False)
    assert not grad.is_sparse
    np.testing.assert_array_equal(grad.numpy(), reference.numpy())
    assert rows_module.row_gradient(grad) is None


def test_the_arming_holds_for_its_own_backward_pass_only(rows_module):
    """A loss armed but never backpropagated arms nothing; an armed pass
    that no optimizer step follows leaves the next pass dense."""
    import torch

    table = keras.Variable(np.ones((5, 2), "float32"))
    owner = _Owner()
    setattr(table, rows_module.OWNER_ATTRIBUTE, weakref.ref(owner))
    rows = torch.tensor([3, 1, 3])

    def grad(armed):
        table.value.grad = None
        loss = rows_module.take_rows(table, rows).sum()
        if armed:
            loss = rows_module.arm_row_step(owner, loss)
        loss.backward()
        return table.value.grad

    rows_module.arm_row_step(owner, rows_module.take_rows(table, rows).sum())
    assert not grad(armed=False).is_sparse
    sparse = grad(armed=True)
    assert sparse.is_sparse
    dense = grad(armed=False)
    assert not dense.is_sparse
    np.testing.assert_array_equal(sparse.to_dense().numpy(), dense.numpy())
    np.testing.assert_array_equal(dense.numpy()[:, 0], [0, 1, 0, 2, 0])
    # nothing to arm without autograd
    with torch.no_grad():
        loss = torch.ones(())
        assert rows_module.arm_row_step(owner, loss) is loss


def test_take_rows_needs_an_owner_and_autograd(rows_module):
    import torch

    table = keras.Variable(np.zeros((3, 2), "float32"))
    rows = torch.tensor([1])
    assert rows_module.take_rows(table, rows) is None
    owner = _Owner()
    setattr(table, rows_module.OWNER_ATTRIBUTE, weakref.ref(owner))
    with torch.no_grad():
        assert rows_module.take_rows(table, rows) is None
    del owner  # a replaced optimizer: the weak reference is dead
    assert rows_module.take_rows(table, rows) is None


def test_unique_rows_sums_duplicates(rows_module):
    import torch

    indices = np.array([4, 1, 4, 4, 0])
    values = np.arange(10, dtype="float32").reshape(5, 2)
    rows, summed = rows_module.unique_rows(torch.tensor(indices), torch.tensor(values), 6)
    rows, summed = rows.numpy(), summed.numpy()
    np.testing.assert_array_equal(rows, [0, 1, 4])
    for slot, row in enumerate(rows):
        np.testing.assert_array_equal(summed[slot], values[indices == row].sum(0))


def test_gather_and_scatter_rows(rows_module):
    import torch

    values = np.arange(12, dtype="float32").reshape(4, 3)
    table = keras.Variable(values)
    rows = torch.tensor([2, 0])
    np.testing.assert_array_equal(rows_module.gather_rows(table, rows).numpy(), values[[2, 0]])
    rows_module.scatter_rows(table, rows, -torch.ones((2, 3)))
    expected = values.copy()
    expected[[2, 0]] = -1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(table), expected)
