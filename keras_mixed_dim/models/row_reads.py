"""`keras.layers.Embedding` lookups that read only the looked-up rows.

Keras's `Embedding` looks up with `ops.take(self.embeddings, ids)`, which on
TensorFlow first reads the whole table (`ReadVariableOp`). Once an optimizer
has updated rows in place (`ResourceScatterSub` for an `IndexedSlices`
gradient: Keras's own optimizers and `SparseRowOptimizer` alike), TensorFlow
keeps the variable in copy-on-read mode, so that read copies the whole table,
every step: a DLRM of `keras.layers.Embedding` tables at the Kaggle
cardinalities trained at a sixth of the speed of the same tables read by
rows. `read_embedding_rows` makes such layers gather on the variable itself
(`ResourceGather`), as the package's own layers do (`backend.take_rows`).
"""

import types

import keras
from keras import ops

from keras_mixed_dim.backend import EMBEDDING_READS_WHOLE_TABLE
from keras_mixed_dim.backend import is_ragged_or_sparse
from keras_mixed_dim.backend import take_rows


def read_embedding_rows(model):
    """Makes the plain `keras.layers.Embedding` layers of `model` (nested
    ones included) read only the rows they look up, on TensorFlow.

    Values, gradients (an `IndexedSlices` of the same ids) and errors stay
    those of Keras's `Embedding`: a negative id counts from the end of the
    table, as in `ops.take`; ragged or sparse ids, LoRA and quantized layers
    keep Keras's own lookup. Subclasses of `Embedding` are left alone. The
    package's models (`IdSafeModel`) call it when they are built. On JAX and
    PyTorch it changes nothing.

    Args:
        model: A Keras model or layer.

    Returns:
        The layers it changed, a list (empty on JAX and PyTorch).

    Example:

    >>> model = keras.Sequential([keras.Input((3,), dtype="int32"),
    ...                           keras.layers.Embedding(100, 8)])
    >>> changed = read_embedding_rows(model)  # [the Embedding] on TensorFlow
    >>> vectors = model(keras.ops.convert_to_tensor([[1, 2, 3]]))
    """
    if not EMBEDDING_READS_WHOLE_TABLE:
        return []
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
    # ops.take's rule: a negative id counts from the end of the table
    rows = ops.where(ops.less(inputs, 0), ops.add(inputs, self.input_dim), inputs)
    outputs = take_rows(self._embeddings, rows)
    return ops.cast(outputs, dtype=self.compute_dtype)
