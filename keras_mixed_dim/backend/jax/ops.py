"""JAX's versions of `keras_mixed_dim.backend`'s choices: none differ from
`keras_mixed_dim.backend.portable` (`keras.ops` on JAX already gives dense
gradients and custom gradients that keep only their residuals)."""
