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

import importlib

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
EMBEDDING_READS_WHOLE_TABLE = _choose("EMBEDDING_READS_WHOLE_TABLE")


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
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_mixed_dim.backend.tensorflow.sparse_rows import take_rows as tf_take

        return tf_take(table, rows)
    if backend in ("jax", "torch"):
        rows_values = backend_module("sparse_rows").take_rows(table, rows)
        if rows_values is not None:
            return rows_values
    return keras.ops.take(table, rows, axis=0)


def backend_module(name):
    """The current backend's module `keras_mixed_dim.backend.<backend>.<name>`
    (imported on first use, so no other backend's framework is needed)."""
    return importlib.import_module(
        f"keras_mixed_dim.backend.{NAME}.{name}")


def row_writes():
    """The backend's row writes for tables changed between or inside steps:
    `assign_rows` (numpy, between steps), `write_rows` (tensors, inside a
    step), `read_rows` (to numpy) and `WRITES_IN_LAYER` (whether a write the
    layer makes inside a step persists, False on JAX)."""
    return backend_module("row_writes")
