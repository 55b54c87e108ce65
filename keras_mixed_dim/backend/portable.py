"""The `keras.ops` versions of `keras_mixed_dim.backend`'s choices.

Every function here runs on any Keras backend. A backend folder
(`tensorflow/`, `jax/`, `torch/`) overrides in its `ops.py` only what it
must do otherwise; `keras_mixed_dim.backend` picks the versions once, when
it is imported.
"""

import contextlib

import keras
import numpy as np

# Whether the backend has ragged / sparse id tensors that the layers pad
# into bags (only TensorFlow has them).
SUPPORTS_RAGGED_IDS = False


def dense_gradient(x):
    """Identity whose gradient is a dense tensor on every backend (JAX and
    PyTorch gradients of a gather are dense already)."""
    return x


def residual_gradient(forward, backward, *operands):
    """`forward(*operands)` whose backward pass keeps only chosen residuals.

    Args:
        forward: Function of the operands returning `(outputs, residuals)`,
            `residuals` a tuple of tensors (or None entries).
        backward: Function `(upstream, residuals)` returning one gradient per
            operand (None where an operand gets none).
        *operands: The tensors to differentiate with respect to.

    Returns:
        `outputs` of `forward`, differentiable through `backward`.

    Example:

    >>> def forward(x):
    ...     return x * x, (x,)
    >>> def backward(upstream, residuals):
    ...     return (2.0 * residuals[0] * upstream,)
    >>> y = residual_gradient(forward, backward, keras.ops.ones((2,)))

    This is `keras.ops.custom_gradient`, whose gradient function already
    closes over only what it uses on TensorFlow and JAX. PyTorch's saves
    every input, so there a `torch.autograd.Function` keeps just the
    residuals (`keras_mixed_dim.backend.torch.residual_gradient`).
    """
    return keras.ops.custom_gradient(_residual_op(forward, backward))(*operands)


def _residual_op(forward, backward):
    def op(*args):
        outputs, residuals = forward(*args)

        def grad(*positional, upstream=None, **unused):
            # PyTorch's custom_gradient passes the operands positionally and
            # the upstream gradient by keyword; TensorFlow and JAX pass it first
            if upstream is None:
                upstream = positional[0]
            grads = backward(upstream, residuals)
            return tuple(keras.ops.zeros_like(a) if g is None else g
                         for a, g in zip(args, grads))

        return outputs, grad

    return op


def take_columns(x, columns, axis=-1):
    """`ops.take(x, columns, axis=axis)` for non-negative constant `columns`."""
    return keras.ops.take(x, columns, axis=axis)


def split_columns(x, sizes):
    """`x` split along its last axis into parts of `sizes` columns (a list)."""
    return keras.ops.split(x, [int(i) for i in np.cumsum(sizes)[:-1]], axis=-1)


def is_ragged_or_sparse(x):
    """Whether `x` is a `tf.RaggedTensor` or `tf.SparseTensor` (only
    TensorFlow has them)."""
    return False


def padded_bags(ids, weights, bag_size, layer_name=None):
    """Ragged or sparse ids (and weights) as padded `(batch, bag_size)` ids
    (-1 for padding) and weights: see
    `keras_mixed_dim.backend.tensorflow.bags.padded_bags`. Only TensorFlow
    has ragged or sparse tensors."""
    where = f"Layer {layer_name!r}" if layer_name else "The layer"
    raise ValueError(
        f"{where} got ragged / sparse ids, which only the TensorFlow backend has "
        f"(this process runs {keras.backend.backend()!r}); pad the bags yourself.")


def saturating_scatter_add(variable, positions, increments):
    """Adds `increments` at `positions` of an int32 count variable in place,
    saturating at the int32 maximum, where the backend can (TensorFlow);
    returns whether it did. Other backends use the portable dense update."""
    return False


def divide_gradient(grad, scale):
    """`grad / scale` for a dense gradient or TensorFlow's `IndexedSlices`
    (whose values are divided; `/` is not defined on them)."""
    return grad / scale


def model_variable_scope(model):
    """The context in which variables created for `model` (a re-planned
    layer's) are placed as the model's own: its tf.distribute strategy's
    scope on TensorFlow, so they are mirrored; nothing elsewhere."""
    return contextlib.nullcontext()


# -- sparse row updates (`keras_mixed_dim.optimizers.SparseRowOptimizer`) ----

def take_rows(table, rows):
    """`ops.take(table, rows, axis=0)` for a table variable, reading only
    `rows` on every backend.

    On TensorFlow `ops.take` first reads the whole variable into a tensor;
    when the optimizer then updates the variable in place, TensorFlow must
    copy the whole table (the read still holds it), each step, outside XLA.
    A gather on the variable itself reads only the rows.

    On PyTorch, for a table updated by a `SparseRowOptimizer`, the lookup's
    backward gives the table a sparse gradient (`backend/torch/sparse_rows.py`);
    on JAX, inside the row train step (`backend/jax/sparse_rows.py`), the
    lookup is where the step takes the rows' gradients from. A layer whose
    tables get sparse row updates must read them through this function only
    and flag them in `build` (`keras_mixed_dim.backend.row_gradients.flag_table`);
    other reads are differentiated densely: correct, but not sparse.

    Args:
        table: A 2-D Keras variable (or tensor).
        rows: Integer tensor of row ids in `[0, table.shape[0])`.

    Returns:
        The rows, shape `rows.shape + table.shape[1:]`.

    Example:

    >>> table = keras.Variable(np.eye(3, dtype="float32"))
    >>> take_rows(table, np.array([2, 0]))  # rows 2 and 0
    """
    return keras.ops.take(table, rows, axis=0)


# The backend's row operations for `SparseRowOptimizer` (a module with
# `unique_rows`, `gather_rows`, `scatter_rows`): each backend's
# `sparse_rows.py`; a backend without one gets no sparse row updates.
ROW_OPS = None

# Advice appended to `SparseRowOptimizer`'s warning when a table gets a
# dense gradient; None where a dense gradient of a table is a deliberate
# whole read that needs no warning (TensorFlow: its lookups give
# `IndexedSlices`).
DENSE_TABLE_GRADIENT_ADVICE = (
    "Read tables through keras_mixed_dim.backend.take_rows.")


def arm_row_step(optimizer, loss):
    """The scaled `loss` that `SparseRowOptimizer.scale_loss` returns: on
    PyTorch its backward pass (that pass only) gives the optimizer's tables
    sparse gradients; elsewhere `loss` unchanged."""
    return loss


def attach_row_optimizer(optimizer, tables):
    """Tells each of `tables` that `optimizer` (a built `SparseRowOptimizer`)
    updates it by rows, where the lookups need to know (PyTorch)."""


def has_distribution_strategy():
    """Whether a tf.distribute strategy is in scope (only TensorFlow has them)."""
    return False


def table_gradient(gradient, armed):
    """A table's gradient as `SparseRowOptimizer.apply` receives it, in the
    form its row step takes (`RowGradient` for PyTorch's sparse `.grad`).
    `armed`: whether this step's lookups gave sparse gradients."""
    return gradient


def sparse_gradient_rows(gradient):
    """`(indices, values)` of a backend-native sparse table gradient
    (TensorFlow's `IndexedSlices`), else None."""
    return None


def update_tables(pairs, update, learning_rate, step):
    """Calls `update(grad, variable, learning_rate, step)` for each
    `(grad, variable)` of `pairs` (TensorFlow's also does so on each replica's
    copy under a tf.distribute strategy)."""
    for grad, variable in pairs:
        update(grad, variable, learning_rate, step)


# JAX's `jax.value_and_grad` with tables differentiated by rows, and the
# train step using it (`keras_mixed_dim.backend.jax.sparse_rows`); None on
# the backends whose Keras step gives sparse table gradients already.
row_value_and_grad = None
row_train_step = None


# -- `DynamicEmbedding`'s lookup (`_vectors`): ops whose operands are known
# to be in range, where a backend can skip the work of the general op -------

def take_rows_in_range(table, rows):
    """`take_rows(table, rows)` for `rows` known to be in
    `[0, table.shape[0])` (clipped, or constants): JAX gathers them without
    the bounds checks of `jnp.take`'s "fill" mode (on the gather and on its
    gradient's scatter); elsewhere the backend's `take_rows`.

    Args:
        table: A 2-D Keras variable (or tensor).
        rows: Integer tensor of row ids, every one in range.

    Returns:
        The rows, shape `rows.shape + table.shape[1:]`.

    Example:

    >>> table = keras.Variable(np.eye(3, dtype="float32"))
    >>> take_rows_in_range(table, np.array([2, 0]))  # rows 2 and 0
    """
    return take_rows(table, rows)


def nonnegative_divmod(x, divisor):
    """`(x // divisor, x % divisor)` of a non-negative integer tensor `x`
    and a positive Python int `divisor`: JAX's truncating `lax.div` and
    `lax.rem` (equal there, without `floor_divide`'s and `mod`'s sign
    corrections); elsewhere `floor_divide` and `mod`."""
    return keras.ops.floor_divide(x, divisor), keras.ops.mod(x, divisor)


def count_bounds_reached(x, bounds):
    """For each of integer tensor `x`, how many of `bounds` (ascending
    Python ints) are at or below it: `np.digitize(x, bounds)`, as int32.

    By comparisons, which XLA fuses into one loop (`ops.digitize` is a
    `searchsorted`); TensorFlow runs one `Bucketize` op instead (its step
    without XLA pays tens of microseconds per op), up to bounds of 2**24."""
    count = keras.ops.zeros_like(x, dtype="int32")
    for bound in bounds:
        count = count + keras.ops.cast(keras.ops.greater_equal(x, bound), "int32")
    return count


def equals_columns(values, columns, num_values):
    """`values[..., None] == columns`, bool: for each of integer tensor
    `values` (each in `[0, num_values)`), which entries of the constant
    integer vector `columns` equal it.

    By a comparison, which XLA fuses; TensorFlow gathers the rows of the
    constant `(num_values, columns.size)` table instead (one op, and faster
    than its broadcast comparison at small batches)."""
    return keras.ops.equal(keras.ops.expand_dims(values, -1), columns)
