"""int8 / float16 block tables for serving mixed-dimension and stacked
embeddings.

Following `keras.layers.Embedding.quantize("int8")`: each table row is
stored as int8 with one float32 scale per row, `q = round(x * scale)`,
`scale = 127 / max|x|`, and read back as `q / scale`. Projections and the
id -> rank table stay as they are. float16 stores the tables as float16.
Quantized tables are not trainable; the projections still are. A
`StackedEmbedding` (a stacked DLRM's, converted by `compress_model` or not)
becomes a `QuantizedStackedEmbedding` the same way, every stacked table
row with its own scale.
"""

import warnings

import keras
import numpy as np
from keras import ops

from keras_mixed_dim.budgets import embedding_bytes
from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.layers.quantized_mixed_dim_embedding import TABLE_DTYPES
from keras_mixed_dim.layers.quantized_mixed_dim_embedding import (
    QuantizedMixedDimEmbedding,
)
from keras_mixed_dim.layers.quantized_stacked_embedding import QuantizedStackedEmbedding
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding

INT8_MAX = 127.0


def quantize_rows(table, epsilon=keras.config.epsilon()):
    """`(q, scale)`: int8 rows and float32 per-row scales, as Keras's
    `AbsMaxQuantizer(axis=-1)` computes them (numpy).

    Args:
        table: A float `rows x dim` array.
        epsilon: Added to each row's largest magnitude (an all-zero row gets
            scale `127 / epsilon`).

    Returns:
        `(q, scale)`: `q` int8 `rows x dim`, `scale` float32 `rows x 1`;
        `q / scale` approximates `table`.

    Example:

    >>> q, scale = quantize_rows(np.array([[1.0, -1.0]], "float32"))
    >>> q
    array([[ 127, -127]], dtype=int8)
    """
    table = np.asarray(table, dtype=np.float32)
    scale = INT8_MAX / (np.max(np.abs(table), axis=-1) + epsilon)
    q = np.clip(np.round(table * scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale.astype(np.float32)


def weight_bytes(layer):
    """Deprecated (removed in 0.4.0): `keras_mixed_dim.embedding_bytes`.

    Bytes of every weight of a built layer, each at its own dtype.

    Args:
        layer: A Keras layer (built).

    Returns:
        The byte count, an int.

    Example:

    >>> layer = keras.layers.Embedding(1000, 16)
    >>> layer.build()
    >>> weight_bytes(layer)     # doctest: +SKIP (warns: deprecated)
    64000
    """
    warnings.warn("`keras_mixed_dim.compress.weight_bytes` is deprecated and will be "
                  "removed in 0.4.0; use `keras_mixed_dim.embedding_bytes` (every "
                  "array of a layer, built or not).", DeprecationWarning, stacklevel=2)
    return sum(
        int(np.prod(w.shape)) * np.dtype(keras.backend.standardize_dtype(w.dtype)).itemsize
        for w in layer.weights
    )


def _store(variable, table, scale, mode):
    table = np.asarray(ops.convert_to_numpy(table), np.float32)
    if mode == "int8":
        q, row_scale = quantize_rows(table)
        variable.assign(q)
        scale.assign(row_scale)
    else:
        variable.assign(table.astype(np.float16))


def quantize_layer(layer, mode="int8"):
    """A built quantized copy of `layer` holding its weights in `mode`.

    Args:
        layer: A built `MixedDimEmbedding` or `StackedEmbedding` (not
            already quantized).
        mode: `"int8"` or `"float16"`.

    Returns:
        The new layer, a `QuantizedMixedDimEmbedding` or
        `QuantizedStackedEmbedding` (same name and config, without frequency
        counting); `layer` is left as it is.

    Example:

    >>> layer = MixedDimEmbedding(1000, 16)
    >>> layer.build()
    >>> int8 = quantize_layer(layer, "int8")
    >>> int8.bytes < layer.bytes
    True
    """
    if mode not in TABLE_DTYPES:
        raise ValueError(f"`mode` must be one of {TABLE_DTYPES}. Received: {mode!r}")
    if isinstance(layer, (QuantizedMixedDimEmbedding, QuantizedStackedEmbedding)):
        raise ValueError(f"Layer {layer.name!r} is already quantized "
                         f"({layer.table_dtype}).")
    if not isinstance(layer, (MixedDimEmbedding, StackedEmbedding)):
        raise ValueError(
            f"quantize_layer takes a MixedDimEmbedding or StackedEmbedding; "
            f"{layer.name!r} is a {type(layer).__name__} (for "
            "keras.layers.Embedding use its own `quantize('int8')`)."
        )
    if not layer.built:
        raise ValueError(f"Layer {layer.name!r} is not built: nothing to quantize.")
    if isinstance(layer, StackedEmbedding):
        return _quantize_stacked(layer, mode)
    config = layer.get_config()
    config.update(count_frequencies=False, frequency_half_life=None, table_dtype=mode)
    new = QuantizedMixedDimEmbedding.from_config(config)
    new.build()
    for i, variable in enumerate(layer.block_embeddings):
        _store(new.block_embeddings[i], variable, new.block_scales[i], mode)
    # numpy copies: on JAX a shared buffer would be deleted when either
    # model donates its state
    for old, variable in zip(layer.block_projections, new.block_projections):
        if variable is not None:
            variable.assign(np.array(ops.convert_to_numpy(old)))
    if layer.remap is not None:
        new.remap.assign(np.array(ops.convert_to_numpy(layer.remap)))
    return new


def _quantize_stacked(layer, mode):
    config = layer.get_config()
    config.update(count_frequencies=False, frequency_half_life=None, table_dtype=mode)
    new = QuantizedStackedEmbedding.from_config(config)
    new.build()
    for variable, table, scale in zip(new.tables, layer.tables, new.scales):
        _store(variable, table, scale, mode)
    for old, variable in zip(layer.projections, new.projections):
        if variable is not None:
            variable.assign(np.array(ops.convert_to_numpy(old)))
    if layer.remap is not None:
        new.remap.assign(np.array(ops.convert_to_numpy(layer.remap)))
    return new


def quantize_model(model, mode="int8", layer_names=None):
    """A copy of `model` with its `MixedDimEmbedding` and `StackedEmbedding`
    tables quantized (see `quantize_layer`).

    Args:
        model: A built functional or Sequential model (e.g. from
            `compress_model`, fine-tuned or not; a stacked DLRM's
            `StackedEmbedding` has every stacked table quantized, the
            features left uniform included).
        mode: `"int8"` (per-row scales) or `"float16"`.
        layer_names: Layers to quantize (default: every float
            `MixedDimEmbedding` and `StackedEmbedding`).

    Returns:
        `(new_model, report)`, `report` a `CompressionReport` with the bytes
        of each layer before and after.

    Example:

    >>> small, report = quantize_model(model, "int8")       # doctest: +SKIP
    >>> print(report)                                       # doctest: +SKIP
    """
    from keras_mixed_dim.compress.model import CompressionReport
    from keras_mixed_dim.compress.model import LayerCompression

    layers = {layer.name: layer for layer in model.layers}
    candidates = [name for name, layer in layers.items()
                  if type(layer) in (MixedDimEmbedding, StackedEmbedding)]
    if layer_names is None:
        selected = candidates
        if not selected:
            raise ValueError(
                f"Model {model.name!r} has no MixedDimEmbedding (or StackedEmbedding) "
                "layer to quantize (convert it first with compress_model)."
            )
    else:
        selected = [layer_names] if isinstance(layer_names, str) else list(layer_names)
        for name in selected:
            if name not in candidates:
                raise ValueError(
                    f"{name!r} is not a float MixedDimEmbedding or StackedEmbedding of model "
                    f"{model.name!r}; those are {candidates}."
                )
    replacements = {name: quantize_layer(layers[name], mode) for name in selected}

    def clone(layer):
        if layer.name in replacements:
            return replacements[layer.name]
        return layer.__class__.from_config(layer.get_config())

    new_model = keras.models.clone_model(model, clone_function=clone)
    for layer in new_model.layers:
        # input layers may be renamed by the clone; they hold no weights
        if layer.name not in replacements and layer.weights:
            layer.set_weights(layers[layer.name].get_weights())
    report = CompressionReport([
        LayerCompression(name, mode, _input_dim(layers[name]), layers[name].output_dim,
                         embedding_bytes(layers[name]),
                         embedding_bytes(replacements[name]))
        for name in selected
    ])
    return new_model, report


def _input_dim(layer):
    """Ids of a layer: all features' together for a stacked one."""
    if isinstance(layer, StackedEmbedding):
        return int(np.sum(layer.input_dims))
    return layer.input_dim
