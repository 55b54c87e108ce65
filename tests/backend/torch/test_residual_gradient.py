"""PyTorch's `residual_gradient`: the given backward, and only the residuals
saved for it (`keras.ops.custom_gradient` saves every operand)."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="a PyTorch-only module")


def saved_sizes(fn):
    """Elements of every tensor autograd saves while `fn` runs."""
    import torch

    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sizes


def test_gradient_is_the_backward_and_only_residuals_are_saved():
    import torch

    from keras_mixed_dim.backend.torch.residual_gradient import residual_gradient

    big = torch.arange(1000, dtype=torch.float32, requires_grad=True)
    small = torch.tensor([2.0], requires_grad=True)

    def forward(a, b):
        # a residual of one element stands for a compressed copy of `a`
        return a * b, (b.detach(), None)

    def backward(upstream, residuals):
        assert residuals[1] is None
        return upstream * residuals[0], None

    out, sizes = saved_sizes(lambda: residual_gradient(forward, backward, big, small))
    assert sizes == [1]
    out.sum().backward()
    np.testing.assert_array_equal(big.grad.numpy(), np.full(1000, 2.0))
    assert small.grad is None
    _, keras_sizes = saved_sizes(lambda: keras.ops.custom_gradient(
        lambda a, b: (a * b, lambda *x, upstream=None: (upstream * b, None)))(big, small))
    assert 1000 in keras_sizes
