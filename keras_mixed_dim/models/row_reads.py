"""`keras.layers.Embedding` lookups that read only the looked-up rows, through
`keras_mixed_dim.backend.take_rows`, as the package's own layers do.

Keras's `Embedding` looks up with `ops.take(self.embeddings, ids)`, which on
TensorFlow first reads the whole table (`ReadVariableOp`). Once an optimizer
has updated rows in place (`ResourceScatterSub` for an `IndexedSlices`
gradient: Keras's own optimizers and `SparseRowOptimizer` alike), TensorFlow
keeps the variable in copy-on-read mode, so that read copies the whole table,
every step: a DLRM of `keras.layers.Embedding` tables at the Kaggle
cardinalities trained at a sixth of the speed of the same tables read by
rows. `read_embedding_rows` makes such layers gather on the variable itself
(`ResourceGather`).

On JAX and PyTorch the same lookup is where `SparseRowOptimizer`'s row
gradients come from: on PyTorch the lookup's backward gives the table a
sparse gradient inside Keras's own train step, on JAX the row step
(`IdSafeModel`, `sparse_row_train_step`) differentiates the gathered rows.
Without it a `keras.layers.Embedding` table gets a dense gradient there
(the optimizer's dense fallback, which warns).
"""

import types

import keras
from keras import ops

from keras_mixed_dim.backend import is_ragged_or_sparse
from keras_mixed_dim.backend import take_rows


def read_embedding_rows(model):
    """Makes the plain `keras.layers.Embedding` layers of `model` (nested
    ones included) look up through `keras_mixed_dim.backend.take_rows`.

    On TensorFlow the lookup then reads only its rows of the table. With a
    `SparseRowOptimizer`, the tables get sparse row updates on every backend:
    on PyTorch in Keras's own train step, on JAX in the row step
    (`IdSafeModel` or `sparse_row_train_step`).

    Values, gradients and errors stay those of Keras's `Embedding`: a
    negative id counts from the end of the table, as in `ops.take`, and
    `mask_zero` masks as before (the mask is not the lookup's). Ragged or
    sparse ids, LoRA-enabled and quantized layers keep Keras's own lookup,
    at call time: LoRA's table is a sum of two variables and a quantized
    one is not float, so neither is a table the optimizer can update by rows
    (they get a dense gradient, as without this function). Subclasses of
    `Embedding` are left alone: their `call` may differ. The package's
    models (`IdSafeModel`) call it when they are built.

    Args:
        model: A Keras model or layer.

    Returns:
        The layers it changed, a list.

    Example:

    >>> model = keras.Sequential([keras.Input((3,), dtype="int32"),
    ...                           keras.layers.Embedding(100, 8)])
    >>> changed = read_embedding_rows(model)  # [the Embedding]
    >>> vectors = model(keras.ops.convert_to_tensor([[1, 2, 3]]))
    """
    changed = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if type(layer) is keras.layers.Embedding and "call" not in vars(layer):
            layer.call = types.MethodType(_row_call, layer)
            changed.append(layer)
    return changed


def _row_call(self, inputs):
    if (self.quantization_mode is not None or getattr(self, "lora_enabled", False)
            or is_ragged_or_sparse(inputs)):
        return keras.layers.Embedding.call(self, inputs)
    if inputs.dtype != "int32" and inputs.dtype != "int64":
        inputs = ops.cast(inputs, "int32")
    # ops.take's rule: a negative id counts from the end of the table (one
    # below -input_dim stays out of range, as in ops.take)
    wraps = ops.logical_and(ops.less(inputs, 0), ops.greater_equal(inputs, -self.input_dim))
    rows = ops.where(wraps, ops.add(inputs, self.input_dim), inputs)
    outputs = take_rows(self._embeddings, rows)
    return ops.cast(outputs, dtype=self.compute_dtype)
