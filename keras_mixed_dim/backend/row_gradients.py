"""Which variables are embedding tables, and `RowGradient`, a table's
gradient as the rows a batch looked up.

Layers flag their tables in `build` (`flag_table`): the flag is the
variable's `sparse_rows` attribute, which a user may set to False to opt a
table out of row updates (or True on a table of their own layer).

TensorFlow hands an optimizer a gather's gradient as `tf.IndexedSlices` and
PyTorch's lookups give a sparse `.grad` (`keras_mixed_dim.backend.torch`);
JAX's `jax.grad` can only give an array of the table's shape, so the JAX row
step (`keras_mixed_dim.backend.jax.sparse_rows`) differentiates with respect
to the gathered rows and passes this backend-neutral object to
`SparseRowOptimizer` instead.
"""

SPARSE_ROWS_ATTRIBUTE = "sparse_rows"


def flag_table(variable):
    """Marks `variable` as an embedding table (`variable.sparse_rows = True`)
    unless it carries a flag already; a layer calls this in `build` on each
    table it reads through `keras_mixed_dim.backend.take_rows`.

    Returns:
        `variable`.
    """
    if getattr(variable, SPARSE_ROWS_ATTRIBUTE, None) is None:
        setattr(variable, SPARSE_ROWS_ATTRIBUTE, True)
    return variable


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
