"""Backend-specific pieces, one folder per backend (as keras-rs splits them).

The backend is chosen once, when this package is imported: `NAME` is the
Keras backend of the process (Keras fixes it before anything else runs),
and each function below is the version of `NAME`'s folder
(`tensorflow/ops.py`, `jax/ops.py`, `torch/ops.py`) or, where that folder
does nothing special, the `keras.ops` one of `portable.py`. Only the chosen
backend's framework is imported, so the JAX path works with TensorFlow
absent. Code outside this package asks these functions and flags, never
`keras.backend.backend()`.
"""

import functools
import importlib
import importlib.util

import keras

from keras_mixed_dim.backend import portable as _portable

#: The Keras backend this process runs ("tensorflow", "jax", "torch", ...).
NAME = keras.backend.backend()

_FOLDERS = ("tensorflow", "jax", "torch")
_chosen = (importlib.import_module(f"keras_mixed_dim.backend.{NAME}.ops")
           if NAME in _FOLDERS else _portable)


def _choose(name):
    return getattr(_chosen, name, getattr(_portable, name))


dense_gradient = _choose("dense_gradient")
residual_gradient = _choose("residual_gradient")
take_columns = _choose("take_columns")
split_columns = _choose("split_columns")
is_ragged_or_sparse = _choose("is_ragged_or_sparse")
padded_bags = _choose("padded_bags")
saturating_scatter_add = _choose("saturating_scatter_add")
divide_gradient = _choose("divide_gradient")
model_variable_scope = _choose("model_variable_scope")
SUPPORTS_RAGGED_IDS = _choose("SUPPORTS_RAGGED_IDS")

# Sparse row updates (`keras_mixed_dim.optimizers.SparseRowOptimizer`); see
# `portable.py` for what each one does.
take_rows = _choose("take_rows")
ROW_OPS = _choose("ROW_OPS")
arm_row_step = _choose("arm_row_step")
DENSE_TABLE_GRADIENT_ADVICE = _choose("DENSE_TABLE_GRADIENT_ADVICE")
attach_row_optimizer = _choose("attach_row_optimizer")
has_distribution_strategy = _choose("has_distribution_strategy")
table_gradient = _choose("table_gradient")
sparse_gradient_rows = _choose("sparse_gradient_rows")
update_tables = _choose("update_tables")
row_value_and_grad = _choose("row_value_and_grad")
row_train_step = _choose("row_train_step")

# `DynamicEmbedding`'s lookup: operands known to be in range
take_rows_in_range = _choose("take_rows_in_range")
nonnegative_divmod = _choose("nonnegative_divmod")
count_bounds_reached = _choose("count_bounds_reached")
equals_columns = _choose("equals_columns")


def require(backend_name, what, error=ValueError, hint=""):
    """Refuses `what` unless the process runs `backend_name`.

    Args:
        backend_name: The Keras backend `what` needs.
        what: What is refused, for the message.
        error: The exception class to raise.
        hint: An optional sentence appended to the message.

    Raises:
        `error`, naming both backends, when `NAME != backend_name`.

    Example:

    >>> require("tensorflow", "A SavedModel export", RuntimeError)
    """
    if NAME != backend_name:
        message = (f"{what} needs the {backend_name!r} backend "
                   f"(KERAS_BACKEND={backend_name}); this process runs {NAME!r}.")
        raise error(f"{message} {hint}".strip())


def backend_module(name):
    """The current backend's module `keras_mixed_dim.backend.<backend>.<name>`
    (imported on first use, so no other backend's framework is needed)."""
    return importlib.import_module(
        f"keras_mixed_dim.backend.{NAME}.{name}")


def row_writes():
    """The backend's row writes for tables changed between or inside steps:
    `assign_rows` (numpy, between steps), `write_rows` (tensors, inside a
    step), `read_rows` (to numpy), `WRITES_IN_LAYER` (whether a write the
    layer makes inside a step persists, False on JAX) and `CONCRETE_WRITES`
    (whether the layer sees a step's writes as concrete values, True on
    PyTorch's eager step: see `concrete_writes` there)."""
    return backend_module("row_writes")


@functools.cache
def dynamic_lookup():
    """The backend's own `DynamicEmbedding` lookup (`<backend>/dynamic_lookup.py`,
    `vectors(layer, safe, admitted, buckets)`, which returns None for a
    call it leaves to the portable lookup), or None where the portable
    `keras.ops` one is the faster (found once; an error inside the module
    is raised, not taken for its absence)."""
    name = f"keras_mixed_dim.backend.{NAME}.dynamic_lookup"
    if NAME not in _FOLDERS or importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)
