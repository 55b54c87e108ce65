"""PyTorch's versions of `keras_mixed_dim.backend`'s choices (PyTorch-only
module; `keras_mixed_dim.backend.portable` has the rest)."""

from keras_mixed_dim.backend.torch.residual_gradient import residual_gradient

__all__ = ["residual_gradient"]
