"""`compress_model`: one call from a trained model to a compressed one."""

import collections.abc
import dataclasses

import numpy as np

from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.budgets import check_budget_bytes
from keras_mixed_dim.budgets import check_budget_fraction
from keras_mixed_dim.budgets import check_legacy_budget
from keras_mixed_dim.budgets import uniform_bytes
from keras_mixed_dim.budgets import warn_budget_deprecated

class _Unset:
    """Not given (the deprecated `budget=None` meant "no budget")."""

    def __repr__(self):
        return "<not given>"


_UNSET = _Unset()
DEFAULT_FRACTION = 0.125


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

    Example:

    >>> new_model, report = compress_model(model, counts)   # doctest: +SKIP
    >>> [(c.name, c.bytes_after / c.bytes_before) for c in report.layers]  # doctest: +SKIP
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
    """What `compress_model` did: one `LayerCompression` per replaced layer.

    Args:
        layers: One `LayerCompression` per replaced layer.

    Example:

    >>> new_model, report = compress_model(model, counts)   # doctest: +SKIP
    >>> report.bytes_after / report.bytes_before            # doctest: +SKIP
    >>> print(report)                                       # doctest: +SKIP
    """

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


class _Converters(collections.abc.Mapping):
    """`{kind name: converter}` of the kinds a trained table converts to: a
    live view of `keras_mixed_dim.models.kinds` (one registry)."""

    def _kinds(self):
        from keras_mixed_dim.models import kinds

        return {name: kinds.get_kind(name).convert for name in kinds.kind_names()
                if kinds.get_kind(name).convert is not None}

    def __getitem__(self, name):
        return self._kinds()[name]

    def __iter__(self):
        return iter(self._kinds())

    def __len__(self):
        return len(self._kinds())

    def __repr__(self):
        # names only: a function's repr holds its address
        return f"<kinds with a converter: {', '.join(self._kinds())}>"


# name -> fn(layer, counts, budget_bytes, options) -> (new_layer, bytes_after,
# details): the kinds of the registry that have a converter.
COMPRESSION_METHODS = _Converters()


def register_method(name, fn):
    """Adds a converter for `compress_model(method=name)` to the kinds registry.

    A new name becomes a kind that only converts; the name of a kind that
    exists gets `fn` as its converter.

    Args:
        name: The kind's name.
        fn: `fn(layer, counts, budget_bytes, options)` taking a built
            `keras.layers.Embedding`, its per-id counts, the layer's byte
            budget (None without one) and a dict of extra keyword
            arguments; returns `(new_layer, bytes_after, details)` with
            `new_layer` built and holding its weights.

    Example:

    >>> def keep(layer, counts, budget_bytes, options):
    ...     return layer, 4 * layer.input_dim * layer.output_dim, None
    >>> register_method("keep", keep)                       # doctest: +SKIP
    """
    from keras_mixed_dim.models import kinds

    if not isinstance(name, str) or not name:
        raise ValueError(f"A method name must be a non-empty string. Received: {name!r}")
    if not callable(fn):
        raise ValueError(f"Method {name!r} must be callable. Received: {fn!r}")
    if name in kinds.kind_names():
        kinds.register_kind(dataclasses.replace(kinds.get_kind(name), convert=fn))
    else:
        kinds.register_kind(kinds.EmbeddingKind(
            name, "a converter registered with register_method", convert=fn))


def embedding_layers(model):
    """The `keras.layers.Embedding` layers of a model, nested ones included.

    Args:
        model: A Keras model.

    Returns:
        A list of the `keras.layers.Embedding` layers, in the order
        `model.layers` (and nested models) list them.

    Example:

    >>> [layer.name for layer in embedding_layers(model)]   # doctest: +SKIP
    """
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


def stacked_uniform_features(model):
    """`{feature name: (layer, feature)}` for every uniform feature (one
    full-width block, no remap) of the model's top-level `StackedEmbedding`
    layers: the tables `compress_model` can convert there."""
    from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding

    found = {}
    for layer in model.layers:
        # a quantized stacked layer's tables are not float tables to convert
        if type(layer) is not StackedEmbedding:
            continue
        for f, plan in enumerate(layer.plans):
            if (plan.num_blocks == 1 and plan.blocks[0].dim == plan.output_dim
                    and not plan.remapped):
                found[layer.feature_names[f]] = (layer, f)
    return found


def compress_model(model, counts, budget=_UNSET, method="mixed", layer_names=None,
                   min_rows=1000, progress=None, budget_bytes=None,
                   budget_fraction=_UNSET, **options):
    """Replaces a trained model's `Embedding` layers with compressed ones.

    Uniform features of a `StackedEmbedding` (a stacked DLRM's, say) count
    as `Embedding` layers named by the stacked layer's `feature_names`: each
    selected one is converted from its table (`feature_weights`) as its own
    layer would be, and the stacked layer is replaced by one holding the
    converted plans and the other features' weights as they were.

    The functional or Sequential `model` is cloned
    (`keras.models.clone_model`); each selected `keras.layers.Embedding` is
    replaced by the output of `method`'s converter (by default `"mixed"`: a
    `MixedDimEmbedding` made by `mixed_dim_from_embedding`), and every other
    layer gets a copy of its weights. The original model is left untouched.
    The new model is not compiled.

    Example:

    >>> new_model, report = compress_model(model, {"item": item_counts},
    ...                                    budget_fraction=0.125)
    >>> print(report)

    Args:
        model: A built functional or Sequential `keras.Model`.
        counts: Dict mapping each selected layer's name to its per-id counts
            (`input_dim` values, e.g. from a pass over the training data or
            a layer's `frequency_counts`).
        budget: Deprecated: per layer, a fraction `< 1` of its float32
            bytes, or a number of bytes `>= 1` (None: no budget).
        method: An embedding kind with a converter
            (`COMPRESSION_METHODS`; `"mixed"` built in, more with
            `register_method`). `"md"` is its deprecated name.
        layer_names: Names of the Embedding layers to replace; default: every
            Embedding of at least `min_rows` rows and output width > 1.
        min_rows: Smallest table replaced when `layer_names` is None.
        progress: Optional callable `progress(layer_name, rows_done,
            rows_total)`; it is passed on to the method as
            `options["progress"]` (a callable of `rows_done`).
        budget_bytes: Bytes of each new layer, every array counted.
        budget_fraction: Alternative to `budget_bytes`: per layer, a
            fraction in (0, 1] of its float32 table's bytes (default 0.125
            when `budget_bytes` is not given; None: no budget, the most
            popular block keeps the full width).
        **options: Passed to the method (for `"mixed"`: `alpha`,
            `num_blocks`, `sketch`, `sketch_threshold`, `sketch_rows`,
            `round_dims`, `seed`).

    Returns:
        `(new_model, report)`, `report` a `CompressionReport`.
    """
    import keras

    from keras_mixed_dim.models import kinds

    try:
        kind = kinds.get_kind(method, "compress_model")
    except ValueError:
        raise ValueError(
            f"Unknown compression method {method!r}; known: "
            f"{sorted(COMPRESSION_METHODS)}."
        ) from None
    if kind.convert is None:
        raise ValueError(
            f"Embedding kind {method!r} cannot be made from a trained table; the "
            f"kinds with a converter are {sorted(COMPRESSION_METHODS)} (see "
            "register_method).")
    budget_of_layer = _budget_rule(budget, budget_bytes, budget_fraction)
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
    stacked_features = stacked_uniform_features(model)
    for name, (layer, f) in stacked_features.items():
        if name not in embeddings:
            embeddings[name] = _FeatureTable(layer, f)
    if not embeddings:
        raise ValueError(
            f"Model {model.name!r} has no keras.layers.Embedding layer (or uniform "
            "StackedEmbedding feature) to compress."
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
        if name not in top_level and not isinstance(embeddings[name], _FeatureTable):
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
        layer_budget = budget_of_layer(layer)
        try:
            new_layer, bytes_after, details = kind.convert(
                layer.embedding() if isinstance(layer, _FeatureTable) else layer,
                np.asarray(layer_counts), layer_budget, layer_options
            )
        except ValueError as error:
            if layer_budget is None or "smallest" not in str(error):
                raise
            given = ", ".join(f"{k}={v!r}" for k, v in (
                ("budget", budget), ("budget_bytes", budget_bytes),
                ("budget_fraction", budget_fraction)) if v is not _UNSET and v is not None)
            raise ValueError(f"{given or f'budget_fraction={DEFAULT_FRACTION}'} gives "
                             f"layer {name!r} {layer_budget:,.0f} bytes: {error}") from None
        replacements[name] = new_layer
        entries.append(LayerCompression(
            name=name, method=kind.name, input_dim=layer.input_dim,
            output_dim=layer.output_dim,
            bytes_before=layer.input_dim * layer.output_dim * FLOAT_BYTES,
            bytes_after=int(bytes_after), details=details,
        ))

    stacked_replacements = {}
    for name, new_layer in list(replacements.items()):
        table = embeddings[name]
        if isinstance(table, _FeatureTable):
            stacked_replacements.setdefault(table.layer.name, {})[table.feature] = new_layer
            del replacements[name]
    for stacked_name, converted in stacked_replacements.items():
        replacements[stacked_name] = _restacked(top_level[stacked_name], converted)

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


def _budget_rule(budget, budget_bytes, budget_fraction):
    """`layer -> bytes (or None)` from `compress_model`'s budget arguments."""
    if budget is not _UNSET:
        # checked before the warning, whose text compares `budget` with 1
        if budget is not None:
            check_legacy_budget(budget)
        warn_budget_deprecated(
            "compress_model", "per layer, a fraction < 1 of its float32 bytes or a "
            f"number of bytes >= 1 (None: no budget); {budget!r} is "
            + ("no budget" if budget is None else
               f"budget_fraction={budget!r}" if budget < 1 else f"budget_bytes={budget!r}"),
            "budget_fraction or budget_bytes", stacklevel=4)
        if budget_bytes is not None or budget_fraction is not _UNSET:
            raise ValueError(
                "Pass one of `budget_bytes`, `budget_fraction` and the deprecated "
                f"`budget`. Received: budget_bytes={budget_bytes!r}, budget_fraction="
                f"{None if budget_fraction is _UNSET else budget_fraction!r}, "
                f"budget={budget!r}")
        if budget is None:
            return lambda layer: None
        if budget < 1:
            budget_fraction = budget
        else:
            budget_bytes, budget_fraction = budget, _UNSET
    if budget_bytes is not None:
        if budget_fraction is not _UNSET:
            raise ValueError(
                "Pass at most one of `budget_bytes` and `budget_fraction`. Received: "
                f"budget_bytes={budget_bytes!r}, budget_fraction={budget_fraction!r}")
        total = check_budget_bytes(budget_bytes)
        return lambda layer: total
    if budget_fraction is _UNSET:
        budget_fraction = DEFAULT_FRACTION
    if budget_fraction is None:
        return lambda layer: None
    fraction = check_budget_fraction(budget_fraction)
    return lambda layer: fraction * uniform_bytes(layer.input_dim, layer.output_dim)


class _FeatureTable:
    """A uniform feature of a `StackedEmbedding`, standing in for an
    `Embedding` layer while layers are selected and converted."""

    def __init__(self, layer, feature):
        self.layer, self.feature = layer, feature
        self.name = layer.feature_names[feature]
        self.input_dim = int(layer.input_dims[feature])
        self.output_dim = layer.output_dim

    def embedding(self):
        """A built `keras.layers.Embedding` holding the feature's table."""
        import keras

        (table,), _ = self.layer.feature_weights(self.feature)
        embedding = keras.layers.Embedding(self.input_dim, self.output_dim,
                                           name=self.name)
        embedding.build()
        embedding.embeddings.assign(table)
        return embedding


def _restacked(layer, converted):
    """A built copy of `StackedEmbedding` `layer` whose features in
    `converted` (`{feature: new built layer}`) take the new layers' plans and
    weights; the other features keep theirs (and their counts)."""
    from keras import ops

    from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
    from keras_mixed_dim.layers.stacked_embedding import _layer_weights

    plans, per_feature, counting, planning = [], [], [], []
    for f in range(layer.num_features):
        new = converted.get(f)
        if new is None:
            tables, projections = layer.feature_weights(f)
            plans.append(layer.plans[f])
            per_feature.append((tables, projections, layer.feature_ranks(f)))
            counting.append(layer.counting[f])
            planning.append(layer.planning_args[f])
            continue
        plan = getattr(new, "plan", None)
        if plan is None or plan.has_qr_blocks or getattr(new, "combiner", None):
            raise ValueError(
                f"Feature {layer.feature_names[f]!r} of {layer.name!r} was converted "
                f"to a {type(new).__name__}, which a StackedEmbedding cannot hold; "
                "use a method that returns a MixedDimEmbedding.")
        tables, projections = _layer_weights(new, plan)
        remap = getattr(new, "remap", None)
        plans.append(plan)
        per_feature.append((tables, projections,
                            None if remap is None else ops.convert_to_numpy(remap)))
        counting.append(False)
        planning.append(getattr(new, "planning_args", None))
    config = layer.get_config()
    config.update(features=[p.get_config() for p in plans], count_frequencies=counting,
                  planning_args=planning, feature_names=list(layer.feature_names))
    if not any(counting):
        config["frequency_half_life"] = None
    new_layer = StackedEmbedding.from_config(config)
    new_layer.build()
    new_layer.set_feature_arrays(per_feature)
    if new_layer.frequency_counts is not None:
        new_layer.frequency_counts.assign(np.concatenate(
            [layer.feature_counts(f) for f in new_layer.counting_features]).astype(
                new_layer.frequency_counts.dtype))
    return new_layer


def _is_functional(model):
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)
