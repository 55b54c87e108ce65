"""`compress_model`: one call from a trained model to a compressed one."""

import dataclasses

import numpy as np

from keras_mixed_dim.compress.convert import mixed_dim_from_embedding
from keras_mixed_dim.planning.plan import FLOAT_BYTES


@dataclasses.dataclass
class LayerCompression:
    """One replaced layer.

    Attributes:
        name: Layer name (the same in both models).
        method: The compression method.
        input_dim: Ids.
        output_dim: Output width.
        bytes_before: Weight bytes of the original layer.
        bytes_after: Weight bytes of the new layer (every array counted).
        details: Method-specific report (for `"md"`, a `ConversionReport`
            with the plan, alpha and per-block reconstruction errors).
    """

    name: str
    method: str
    input_dim: int
    output_dim: int
    bytes_before: int
    bytes_after: int
    details: object = None

    @property
    def ratio(self):
        return self.bytes_after / self.bytes_before


@dataclasses.dataclass
class CompressionReport:
    """What `compress_model` did: one `LayerCompression` per replaced layer."""

    layers: list

    @property
    def bytes_before(self):
        return sum(layer.bytes_before for layer in self.layers)

    @property
    def bytes_after(self):
        return sum(layer.bytes_after for layer in self.layers)

    def __str__(self):
        lines = [f"{'layer':<24} {'method':>6} {'ids':>12} {'dim':>4} "
                 f"{'bytes before':>14} {'bytes after':>14} {'ratio':>7} {'error':>7}"]
        for layer in self.layers:
            error = getattr(layer.details, "weighted_error", None)
            lines.append(
                f"{layer.name:<24} {layer.method:>6} {layer.input_dim:>12,} "
                f"{layer.output_dim:>4} {layer.bytes_before:>14,} "
                f"{layer.bytes_after:>14,} {layer.ratio:>7.4f} "
                + ("" if error is None else f"{error:>7.4f}")
            )
            for i, block in enumerate(getattr(layer.details, "blocks", ())):
                lines.append(
                    f"    block {i}: {block.rows:,} rows x {block.dim}, mass "
                    f"{block.mass:.3f}, relative error {block.relative_error:.4f}"
                    + (" (sketched" + (", fell back to exact)" if block.fell_back
                                       else ")") if block.sketched else "")
                )
        if self.layers:
            lines.append(
                f"total {self.bytes_before:,} -> {self.bytes_after:,} bytes "
                f"({self.bytes_after / self.bytes_before:.4f}); 'error' is the "
                "count-weighted relative reconstruction error"
            )
        return "\n".join(lines)


def _md_method(layer, counts, budget, options):
    new_layer, report = mixed_dim_from_embedding(
        layer, counts, budget=budget, return_report=True, **options
    )
    return new_layer, report.bytes_after, report


# name -> fn(layer, counts, budget, options) -> (new_layer, bytes_after, details)
COMPRESSION_METHODS = {"md": _md_method}


def register_method(name, fn):
    """Adds a compression method for `compress_model(method=name)`.

    Args:
        name: The method's name.
        fn: `fn(layer, counts, budget, options)` taking a built
            `keras.layers.Embedding`, its per-id counts, the budget (as
            given to `compress_model`) and a dict of extra keyword
            arguments; returns `(new_layer, bytes_after, details)` with
            `new_layer` built and holding its weights.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A method name must be a non-empty string. Received: {name!r}")
    if not callable(fn):
        raise ValueError(f"Method {name!r} must be callable. Received: {fn!r}")
    COMPRESSION_METHODS[name] = fn


def embedding_layers(model):
    """The `keras.layers.Embedding` layers of a model, nested ones included."""
    import keras

    found = []

    def visit(layer):
        if type(layer) is keras.layers.Embedding:
            found.append(layer)
        for child in getattr(layer, "layers", []) or []:
            visit(child)

    for layer in model.layers:
        visit(layer)
    return found


def compress_model(model, counts, budget=0.125, method="md", layer_names=None,
                   min_rows=1000, progress=None, **options):
    """Replaces a trained model's `Embedding` layers with compressed ones.

    The functional or Sequential `model` is cloned
    (`keras.models.clone_model`); each selected `keras.layers.Embedding` is
    replaced by the output of `method` (by default `"md"`: a
    `MixedDimEmbedding` made by `mixed_dim_from_embedding`), and every other
    layer gets a copy of its weights. The original model is left untouched.
    The new model is not compiled.

    Example:

    >>> new_model, report = compress_model(model, {"item": item_counts},
    ...                                    budget=0.125)
    >>> print(report)

    Args:
        model: A built functional or Sequential `keras.Model`.
        counts: Dict mapping each selected layer's name to its per-id counts
            (`input_dim` values, e.g. from a pass over the training data or
            a layer's `frequency_counts`).
        budget: Per layer, a fraction `< 1` of its float32 bytes, or a number
            of bytes `>= 1`, covering every array of the new layer.
        method: A key of `COMPRESSION_METHODS` (see `register_method`).
        layer_names: Names of the Embedding layers to replace; default: every
            Embedding of at least `min_rows` rows and output width > 1.
        min_rows: Smallest table replaced when `layer_names` is None.
        progress: Optional callable `progress(layer_name, rows_done,
            rows_total)`; it is passed on to the method as
            `options["progress"]` (a callable of `rows_done`).
        **options: Passed to the method (for `"md"`: `alpha`, `num_blocks`,
            `sketch`, `sketch_threshold`, `sketch_rows`, `round_dims`,
            `seed`).

    Returns:
        `(new_model, report)`, `report` a `CompressionReport`.
    """
    import keras

    if method not in COMPRESSION_METHODS:
        raise ValueError(
            f"Unknown compression method {method!r}; known: "
            f"{sorted(COMPRESSION_METHODS)}."
        )
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: {type(model).__name__}")
    if not (isinstance(model, keras.Sequential) or _is_functional(model)):
        raise ValueError(
            f"Model {model.name!r} is a subclassed model; compress_model clones "
            "functional and Sequential models only. Convert its layers with "
            "mixed_dim_from_embedding instead."
        )
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built: it has no trained weights.")
    top_level = {layer.name: layer for layer in model.layers}
    embeddings = {layer.name: layer for layer in embedding_layers(model)}
    if not embeddings:
        raise ValueError(
            f"Model {model.name!r} has no keras.layers.Embedding layer to compress."
        )
    if layer_names is None:
        selected = [name for name, layer in embeddings.items()
                    if layer.input_dim >= min_rows and layer.output_dim > 1]
        if not selected:
            raise ValueError(
                f"No Embedding layer of model {model.name!r} has >= {min_rows} rows "
                "and width > 1: "
                + ", ".join(f"{n} ({l.input_dim} x {l.output_dim})"
                            for n, l in embeddings.items())
                + ". Lower `min_rows` or pass `layer_names`."
            )
    else:
        if isinstance(layer_names, str):
            layer_names = [layer_names]
        selected = list(layer_names)
        for name in selected:
            if name not in embeddings:
                raise ValueError(
                    f"{name!r} is not an Embedding layer of model {model.name!r}; "
                    f"its Embedding layers are {sorted(embeddings)}."
                )
    for name in selected:
        if name not in top_level:
            raise ValueError(
                f"Embedding {name!r} is nested inside another layer; only "
                "top-level layers of the model can be replaced."
            )
    if not isinstance(counts, dict):
        raise ValueError(
            "`counts` must be a dict mapping layer names to per-id counts. "
            f"Received: {type(counts).__name__}"
        )
    missing = [name for name in selected if name not in counts]
    if missing:
        raise ValueError(
            f"No counts for layer(s) {missing}; `counts` has {sorted(counts)}."
        )
    replacements, entries = {}, []
    for name in selected:
        layer = embeddings[name]
        layer_options = dict(options)
        if progress is not None:
            layer_options["progress"] = (
                lambda done, name=name, rows=layer.input_dim: progress(name, done, rows))
            progress(name, 0, layer.input_dim)
        layer_counts = counts[name]
        if hasattr(layer_counts, "shape") and not isinstance(layer_counts, np.ndarray):
            layer_counts = keras.ops.convert_to_numpy(layer_counts)
        new_layer, bytes_after, details = COMPRESSION_METHODS[method](
            layer, np.asarray(layer_counts), budget, layer_options
        )
        replacements[name] = new_layer
        entries.append(LayerCompression(
            name=name, method=method, input_dim=layer.input_dim,
            output_dim=layer.output_dim,
            bytes_before=layer.input_dim * layer.output_dim * FLOAT_BYTES,
            bytes_after=int(bytes_after), details=details,
        ))

    def clone(layer):
        if layer.name in replacements:
            return replacements[layer.name]
        return layer.__class__.from_config(layer.get_config())

    new_model = keras.models.clone_model(model, clone_function=clone)
    for layer in new_model.layers:
        # input layers may be renamed by the clone; they hold no weights
        if layer.name in replacements or not layer.weights:
            continue
        layer.set_weights(top_level[layer.name].get_weights())
    return new_model, CompressionReport(entries)


def _is_functional(model):
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)
