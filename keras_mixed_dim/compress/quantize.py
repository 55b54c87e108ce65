"""int8 / float16 block tables for serving mixed-dimension embeddings.

Following `keras.layers.Embedding.quantize("int8")`: each table row is
stored as int8 with one float32 scale per row, `q = round(x * scale)`,
`scale = 127 / max|x|`, and read back as `q / scale`. Projections and the
id -> rank table stay as they are. float16 stores the tables as float16.
Quantized tables are not trainable; the projections still are.
"""

import keras
import numpy as np
from keras import ops

from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.layers.quantized_mixed_dim_embedding import TABLE_DTYPES
from keras_mixed_dim.layers.quantized_mixed_dim_embedding import (
    QuantizedMixedDimEmbedding,
)

INT8_MAX = 127.0


def quantize_rows(table, epsilon=keras.config.epsilon()):
    """`(q, scale)`: int8 rows and float32 per-row scales, as Keras's
    `AbsMaxQuantizer(axis=-1)` computes them (numpy)."""
    table = np.asarray(table, dtype=np.float32)
    scale = INT8_MAX / (np.max(np.abs(table), axis=-1) + epsilon)
    q = np.clip(np.round(table * scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale.astype(np.float32)


def weight_bytes(layer):
    """Bytes of every weight of a layer, each at its own dtype."""
    return sum(
        int(np.prod(w.shape)) * np.dtype(keras.backend.standardize_dtype(w.dtype)).itemsize
        for w in layer.weights
    )


def quantize_layer(layer, mode="int8"):
    """A built `QuantizedMixedDimEmbedding` holding `layer`'s weights in `mode`.

    Args:
        layer: A built `MixedDimEmbedding` (not already quantized).
        mode: `"int8"` or `"float16"`.

    Returns:
        The new layer (same name and config); `layer` is left as it is.
    """
    if mode not in TABLE_DTYPES:
        raise ValueError(f"`mode` must be one of {TABLE_DTYPES}. Received: {mode!r}")
    if isinstance(layer, QuantizedMixedDimEmbedding):
        raise ValueError(f"Layer {layer.name!r} is already quantized "
                         f"({layer.table_dtype}).")
    if not isinstance(layer, MixedDimEmbedding):
        raise ValueError(
            f"quantize_layer takes a MixedDimEmbedding; {layer.name!r} is a "
            f"{type(layer).__name__} (for keras.layers.Embedding use its own "
            "`quantize('int8')`)."
        )
    if not layer.built:
        raise ValueError(f"Layer {layer.name!r} is not built: nothing to quantize.")
    config = layer.get_config()
    config.update(count_frequencies=False, frequency_half_life=None, table_dtype=mode)
    new = QuantizedMixedDimEmbedding.from_config(config)
    new.build()
    for i, variable in enumerate(layer.block_embeddings):
        table = np.asarray(ops.convert_to_numpy(variable), np.float32)
        if mode == "int8":
            q, scale = quantize_rows(table)
            new.block_embeddings[i].assign(q)
            new.block_scales[i].assign(scale)
        else:
            new.block_embeddings[i].assign(table.astype(np.float16))
    # numpy copies: on JAX a shared buffer would be deleted when either
    # model donates its state
    for old, variable in zip(layer.block_projections, new.block_projections):
        if variable is not None:
            variable.assign(np.array(ops.convert_to_numpy(old)))
    if layer.remap is not None:
        new.remap.assign(np.array(ops.convert_to_numpy(layer.remap)))
    return new


def quantize_model(model, mode="int8", layer_names=None):
    """A copy of `model` with its `MixedDimEmbedding` tables quantized.

    Args:
        model: A built functional or Sequential model (e.g. from
            `compress_model`, fine-tuned or not).
        mode: `"int8"` (per-row scales) or `"float16"`.
        layer_names: Layers to quantize (default: every `MixedDimEmbedding`).

    Returns:
        `(new_model, report)`, `report` a `CompressionReport` with the bytes
        of each layer before and after.
    """
    from keras_mixed_dim.compress.model import CompressionReport
    from keras_mixed_dim.compress.model import LayerCompression

    layers = {layer.name: layer for layer in model.layers}
    candidates = [name for name, layer in layers.items()
                  if type(layer) is MixedDimEmbedding]
    if layer_names is None:
        selected = candidates
        if not selected:
            raise ValueError(
                f"Model {model.name!r} has no MixedDimEmbedding layer to quantize "
                "(convert it first with compress_model)."
            )
    else:
        selected = [layer_names] if isinstance(layer_names, str) else list(layer_names)
        for name in selected:
            if name not in candidates:
                raise ValueError(
                    f"{name!r} is not a float MixedDimEmbedding of model "
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
        LayerCompression(name, mode, layers[name].input_dim, layers[name].output_dim,
                         weight_bytes(layers[name]), weight_bytes(replacements[name]))
        for name in selected
    ])
    return new_model, report
