"""A custom gradient that keeps only chosen residuals (PyTorch-only module).

`keras.ops.custom_gradient` on PyTorch saves every input of the function for
the backward pass, full-size float activations included, which defeats a
layer whose point is to keep a compressed copy. A `torch.autograd.Function`
saves exactly the residuals the forward pass returns.
"""

import torch


class _ResidualFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, forward, backward, *operands):
        outputs, residuals = forward(*operands)
        ctx.backward_fn = backward
        ctx.present = tuple(r is not None for r in residuals)
        ctx.save_for_backward(*(r for r in residuals if r is not None))
        return outputs

    @staticmethod
    def backward(ctx, upstream):
        saved = iter(ctx.saved_tensors)
        residuals = tuple(next(saved) if present else None for present in ctx.present)
        # no gradient for the two functions themselves
        return (None, None, *ctx.backward_fn(upstream, residuals))


def residual_gradient(forward, backward, *operands):
    return _ResidualFunction.apply(forward, backward, *operands)
