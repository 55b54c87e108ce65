"""`RowGradient`: a table's gradient as the rows a batch looked up.

TensorFlow hands an optimizer a gather's gradient as `tf.IndexedSlices`;
JAX and PyTorch hand it a dense array of the table's shape. The sparse train
steps of `keras_mixed_dim.backend.jax` and `keras_mixed_dim.backend.torch`
differentiate with respect to the gathered rows instead and pass this
backend-neutral object to `SparseRowOptimizer`.
"""


class RowGradient:
    """The gradient of a table variable, row by row.

    Args:
        indices: Integer tensor `(n,)` of row ids; duplicates are allowed and
            their gradients add up, as in a dense gradient.
        values: Tensor `(n,) + table.shape[1:]`: the gradient of each looked-up
            row. `None` (with `indices=None`) when the table was not looked up
            by row.
        dense: Optional full-size gradient, for a table that the forward pass
            also read as a whole (a regularizer, or a layer that multiplies
            the whole table); the total gradient is `dense` plus the rows.
    """

    def __init__(self, indices=None, values=None, dense=None):
        if (indices is None) != (values is None):
            raise ValueError("`indices` and `values` go together.")
        self.indices = indices
        self.values = values
        self.dense = dense

    @property
    def has_rows(self):
        return self.indices is not None

    def scaled(self, factor):
        """The same gradient divided by `factor` (a loss-scale factor)."""
        return RowGradient(
            self.indices, None if self.values is None else self.values / factor,
            None if self.dense is None else self.dense / factor)
