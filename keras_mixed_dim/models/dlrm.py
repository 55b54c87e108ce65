"""DLRM (Naumov et al. 2019) with uniform or mixed-dimension embeddings."""

import warnings

import keras
import numpy as np
from keras import layers
from keras import ops

from keras_mixed_dim import backend
from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.budgets import budget_of
from keras_mixed_dim.budgets import embedding_bytes
from keras_mixed_dim.budgets import uniform_bytes
from keras_mixed_dim.budgets import warn_budget_deprecated
from keras_mixed_dim.budgets import refuse_budget_with_new
from keras_mixed_dim.checks import check_positive_int
from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.layers.dot_interaction import DotInteraction
from keras_mixed_dim.layers.hashed_memory_embedding import HashedMemoryEmbedding
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
from keras_mixed_dim.models.cross import cross_network
from keras_mixed_dim.models.id_safe import IdSafeModel
from keras_mixed_dim.models.kinds import EMBEDDING_KINDS
from keras_mixed_dim.models.kinds import build_shares
from keras_mixed_dim.models.kinds import get_kind
from keras_mixed_dim.models.kinds import table_dims as kind_table_dims

# Deprecated (removed in 0.4.0): the kinds are `kinds.EMBEDDING_KINDS`.
EMBEDDING_MODES = EMBEDDING_KINDS
SHARED_MEMORY_MODES = tuple(name for name in EMBEDDING_KINDS
                            if get_kind(name).shared_memory)
INTERACTIONS = ("dot", "dcnv2")


def table_dims(cardinalities, dim, mode="table", alpha=0.3, budget=None):
    """Per-table dims: `dim` each for `"uniform"`, else DLRM's `md_solver`
    (the largest table at `dim`, or all within `budget` table parameters,
    the paper's `B`)."""
    if mode == "uniform":
        return [dim] * len(cardinalities)
    return kind_table_dims(cardinalities, dim, alpha, budget)


def embedding_layers(cardinalities, dim, kind=None, alpha=0.3, budget=None, counts=None,
                     num_blocks=4, block_min_rows=10_000, budget_bytes=None,
                     share_memory=True, signatures=None, seed=0, bag_sizes=None,
                     combiner="sum", budget_fraction=None, mode=None):
    """One embedding layer per categorical feature, all with output `dim`.

    Example:

    >>> layers = embedding_layers([10_000, 500, 20], 16, "table",
    ...                           budget_fraction=0.125)
    >>> keras_mixed_dim.embedding_bytes(layers) <= 0.125 * 4 * 10_520 * 16
    True

    Args:
        cardinalities: Rows per feature.
        dim: The common dimension (DLRM's `d`).
        kind: A kind of `keras_mixed_dim.models.kinds` (`EMBEDDING_KINDS`):
            `"uniform"` (every table `dim` wide), `"table"` (one dim per
            table from `md_solver`, as DLRM's `--md-flag`), `"table_blocks"`
            (per table, then frequency blocks inside tables of at least
            `block_min_rows` rows, the top block at the table's dim), or any
            other kind (`"mixed"`, `"qr"`, `"md_qr"`, `"hashing"`,
            `"robe"`, `"lma"`), each feature getting the share of the budget
            its uniform table would have. `"block"` is a deprecated name of
            `"table_blocks"` here.
        alpha: Power-rule temperature.
        budget: Deprecated: `md_solver`'s parameter budget (tables only, no
            projections) of `"table"` / `"table_blocks"`.
        counts: Optional per-feature counts per index (rank order or not)
            for the blocks; without them ids are taken as ranked.
        num_blocks: Blocks per large table (`"table_blocks"`, `"mixed"`,
            `"md_qr"`).
        block_min_rows: Smallest table that gets blocks in `"table_blocks"`.
        budget_bytes: Total byte budget of all embeddings (everything
            counted: `keras_mixed_dim.embedding_bytes(layers)` is at most
            this). Required for `"qr"`, `"md_qr"`, `"hashing"`, `"robe"`,
            `"lma"`.
        share_memory: `"robe"` / `"lma"`: all features read one
            `SharedMemory` (named `"shared_memory"`) of what the budget
            leaves after signatures and hash constants; each feature hashes
            with its own seed.
        signatures: `"lma"`: optional per-feature minhash signatures (from
            `lsh_signatures`), a list with None for features without.
        seed: Base hash seed (feature `f` uses `seed + f`).
        bag_sizes: Optional ids per feature (as `dlrm`'s): when given, every
            feature gets a layer with `combiner` (a uniform one then is a
            one-block `MixedDimEmbedding`, which `dlrm` stacks all the same).
        combiner: The combiner of those layers.
        budget_fraction: Alternative to `budget_bytes`: a fraction in
            (0, 1] of the bytes of all features' uniform float32 tables.
        mode: Deprecated name of `kind`.

    Returns:
        A list of unbuilt layers named `embedding_{f}`.

    Raises:
        ValueError: for an unknown kind, both budgets, or a budget below the
            kind's smallest layers (naming the budget and the minimum).
    """
    if mode is not None:
        warnings.warn("`embedding_layers(mode=...)` is deprecated and will be removed "
                      "in 0.4.0: it is the embedding kind. Pass `kind`.",
                      DeprecationWarning, stacklevel=2)
        if kind is not None:
            raise ValueError(f"Pass `kind` only (`mode` is its deprecated name). "
                             f"Received: kind={kind!r}, mode={mode!r}")
        kind = mode
    spec = get_kind(kind, "dlrm")
    total_uniform = sum(uniform_bytes(rows, dim) for rows in cardinalities)
    spend = budget_of(budget_bytes, budget_fraction, total_uniform)
    options = dict(alpha=alpha, num_blocks=num_blocks, block_min_rows=block_min_rows,
                   share_memory=share_memory, signatures=signatures, seed=seed)
    if budget is not None:
        if spec.name not in ("table", "table_blocks"):
            raise ValueError(
                f"The deprecated `budget` (md_solver's parameters) is for kinds "
                f"'table' and 'table_blocks'; kind {spec.name!r} takes "
                "`budget_bytes` or `budget_fraction`.")
        warn_budget_deprecated("embedding_layers", "md_solver's parameter budget "
                               "(table parameters; projections not counted)",
                               "budget_bytes or budget_fraction (every array counted)")
        refuse_budget_with_new(budget, budget_bytes, budget_fraction)
        options["budget_params"] = budget
    # with bags every feature's layer combines (a bag of one id is that id's
    # vector, times its weight), so `dlrm(bag_weights=True)` works unstacked
    combiners = [None if bag_sizes is None else combiner] * len(cardinalities)
    check_bag_sizes(bag_sizes, len(cardinalities))
    if spec.build_features is not None:
        return spec.build_features(cardinalities, dim, spend, counts, combiners,
                                   options)
    return build_shares(spec, cardinalities, dim, spend, counts, combiners, options)


def check_bag_sizes(bag_sizes, num_features):
    """`bag_sizes` as a tuple of positive ints, one per feature (None: 1 each)."""
    if bag_sizes is None:
        return (1,) * num_features
    if not isinstance(bag_sizes, (list, tuple, np.ndarray)) or (
            len(bag_sizes) != num_features):
        raise ValueError(
            f"`bag_sizes` must be a list of {num_features} positive integers, one "
            f"per sparse feature. Received: {bag_sizes!r}")
    return tuple(check_positive_int(f"bag_sizes[{f}]", k)
                 for f, k in enumerate(bag_sizes))


def dlrm(embeddings, dim, bottom=(512, 256, 64), top=(512, 256), num_dense=13,
         stacked=None, bag_sizes=None, bag_combiner=None, bag_weights=False,
         ragged_bags=False, interaction="dot", cross_layers=3, cross_rank=512):
    """DLRM: bottom MLP on dense features, an interaction, top MLP.

    By default all features are looked up in one `StackedEmbedding` (named
    `"embeddings"`, its features named after the per-feature layers) when
    every layer is one it can take: a plain `keras.layers.Embedding` or a
    `MixedDimEmbedding` with one id per feature (the `"uniform"`, `"table"`
    and `"table_blocks"` kinds of `embedding_layers`); other kinds (QR, MD + QR,
    hashing, ROBE, LMA, bags of ids, regularized or constrained tables) keep
    one layer per feature.

    Args:
        embeddings: One layer per categorical feature, each with output `dim`,
            or one `StackedEmbedding` for all features.
        dim: The embedding dim; the bottom MLP ends at `dim`.
        bottom: Hidden widths of the bottom MLP (then `dim`).
        top: Hidden widths of the top MLP (then 1, sigmoid).
        num_dense: Number of dense features.
        stacked: None (default): stack the features when the layers allow
            it (see above). True: always (an error names a layer that cannot
            be stacked). False: one lookup per per-feature layer. The stacked
            layer takes the per-feature layers' plans, frequency counting and
            weights (when they are built): one gather per distinct width.
        bag_sizes: Optional ids per sparse feature, one positive int each
            (default 1 each: one id per feature, as in Criteo). Feature `f`
            takes `bag_sizes[f]` padded ids (-1 pads), its bag, in
            consecutive columns of `"categorical"`; a stacked layer combines
            each bag in its one gather per width, per-feature layers need a
            combiner (see `embedding_layers(bag_sizes=...)`).
        bag_combiner: `"sum"` (default: MLPerf DLRM's pooling), `"mean"` or
            `"sqrtn"` for the bags. Per-feature (not stacked) layers combine
            with their own `combiner`; an explicit `bag_combiner` that
            differs from one of theirs is an error.
        bag_weights: Whether the model takes per-id weights too, input
            `"categorical_weights"` of the shape of `"categorical"`.
        ragged_bags: TensorFlow only, with the stacked layer: take each
            feature's bag as its own ragged input, `"categorical_{f}"`
            (int `(batch, None)`, plus `"categorical_weights_{f}"` float32
            with `bag_weights`), instead of `"categorical"`; the stacked
            layer pads feature `f` to `bag_sizes[f]` in the graph (a longer
            bag keeps its first ids) and takes a `tf.SparseTensor` there
            too.

        interaction: `"dot"` (DLRM's pairwise dot products, concatenated
            with the bottom MLP's output) or `"dcnv2"` (MLPerf's DLRM-DCNv2:
            the bottom output and every feature vector concatenated, then
            `cross_layers` `LowRankCross` layers of rank `cross_rank`, named
            `cross_0`, ...; the top MLP reads their output).
        cross_layers, cross_rank: The DCNv2 cross network (MLPerf: 3, 512).

    Returns:
        A functional model on `{"dense": (batch, 13) float32, "categorical":
        (batch, sum(bag_sizes)) int32}` (plus `"categorical_weights"` float32
        with `bag_weights`) giving click probabilities `(batch, 1)`.
    """
    if interaction not in INTERACTIONS:
        raise ValueError(f"`interaction` must be one of {INTERACTIONS}. "
                         f"Received: interaction={interaction!r}")
    if isinstance(embeddings, StackedEmbedding):
        if bag_sizes is None:
            bag_sizes = embeddings.bag_sizes
        if bag_combiner is None and embeddings.has_bags:
            bag_combiner = embeddings.combiner
        num_features = embeddings.num_features
    else:
        embeddings = list(embeddings)
        num_features = len(embeddings)
    bag_sizes = check_bag_sizes(bag_sizes, num_features)
    combiner_given = bag_combiner is not None
    bag_combiner = "sum" if bag_combiner is None else bag_combiner
    if bag_combiner not in ("sum", "mean", "sqrtn"):
        raise ValueError("`bag_combiner` must be 'sum', 'mean' or 'sqrtn'. "
                         f"Received: {bag_combiner!r}")
    stacked_layer = stack_embeddings(embeddings, stacked, bag_sizes, bag_combiner)
    if ragged_bags and (not backend.SUPPORTS_RAGGED_IDS or stacked_layer is None):
        raise ValueError(
            "`ragged_bags=True` needs the TensorFlow backend and the stacked layer "
            f"(backend {backend.NAME!r}, stacked: {stacked_layer is not None}); "
            "elsewhere give dlrm padded bags.")
    dense = keras.Input(shape=(num_dense,), dtype="float32", name="dense")
    inputs = {"dense": dense}
    weights = None
    if ragged_bags:
        # one ragged input per feature, which the stacked layer pads
        categorical = [keras.Input(shape=(None,), dtype="int32", ragged=True,
                                   name=f"categorical_{f}") for f in range(num_features)]
        inputs.update((t.name, t) for t in categorical)
        if bag_weights:
            weights = [keras.Input(shape=(None,), dtype="float32", ragged=True,
                                   name=f"categorical_weights_{f}")
                       for f in range(num_features)]
            inputs.update((t.name, t) for t in weights)
    else:
        categorical = keras.Input(shape=(sum(bag_sizes),), dtype="int32",
                                  name="categorical")
        inputs["categorical"] = categorical
        if bag_weights:
            weights = keras.Input(shape=(sum(bag_sizes),), dtype="float32",
                                  name="categorical_weights")
            inputs["categorical_weights"] = weights
    x = dense
    for i, width in enumerate((*bottom, dim)):
        x = layers.Dense(width, activation="relu", name=f"bottom_{i}")(x)
    if stacked_layer is not None:
        if weights is None:
            looked_up = stacked_layer(categorical)
        else:
            looked_up = stacked_layer(categorical, weights=weights)
        # The (batch, F, d) block goes to the interaction whole: unstacked
        # into vectors (which the interaction would stack again) it cost a
        # stacked MD step on TensorFlow two more copies of it each way.
        vectors = [x, looked_up]
    else:
        vectors = [x] + _per_feature_lookups(
            embeddings, categorical, weights, bag_sizes,
            bag_combiner if combiner_given else None)
    z = _interact(vectors, interaction, cross_layers, cross_rank)
    for i, width in enumerate(top):
        z = layers.Dense(width, activation="relu", name=f"top_{i}")(z)
    probability = layers.Dense(1, activation="sigmoid", name="probability")(z)
    return IdSafeModel(inputs, probability, name="dlrm")


def _interact(vectors, interaction, cross_layers, cross_rank):
    """The top MLP's input from `[bottom output, feature vectors...]`, the
    feature vectors one `(batch, d)` tensor each or one `(batch, F, d)`
    block (a stacked layer's)."""
    if interaction == "dcnv2":
        vectors = [v if len(v.shape) == 2 else ops.reshape(v, (-1, v.shape[1] * v.shape[2]))
                   for v in vectors]
        x0 = layers.Concatenate(name="interaction")(vectors)
        return cross_network(x0, cross_layers, cross_rank, name="cross")
    interactions = DotInteraction(name="interaction")(vectors)
    return layers.Concatenate(name="top_input")([vectors[0], interactions])


def _per_feature_lookups(embeddings, categorical, weights, bag_sizes, bag_combiner=None):
    vectors, start = [], 0
    for f, (embedding, k) in enumerate(zip(embeddings, bag_sizes)):
        stop = start + k
        own = getattr(embedding, "combiner", None)
        if bag_combiner is not None and own is not None and own != bag_combiner:
            # a per-feature layer combines with its own combiner: a different
            # explicit bag_combiner would be silently ignored
            raise ValueError(
                f"bag_combiner={bag_combiner!r}, but feature {f}'s layer "
                f"{embedding.name!r} (not stacked) combines its bag with "
                f"combiner={own!r}. Give the layers combiner={bag_combiner!r} or "
                "leave bag_combiner unset.")
        if own is not None:
            if weights is None:
                vectors.append(embedding(categorical[:, start:stop]))
            else:
                vectors.append(embedding(categorical[:, start:stop],
                                         weights=weights[:, start:stop]))
        elif k > 1 or weights is not None:
            raise ValueError(
                f"Feature {f} has {'a bag of ' + str(k) + ' ids' if k > 1 else 'weights'}"
                f", but its layer {embedding.name!r} has no combiner: give it one "
                "(embedding_layers(bag_sizes=...) does) or let dlrm stack the features.")
        else:
            vectors.append(embedding(categorical[:, start]))
        start = stop
    return vectors


def stack_embeddings(embeddings, stacked=None, bag_sizes=None, combiner="sum"):
    """The `StackedEmbedding` that `dlrm(embeddings, stacked=stacked)` uses
    (named `"embeddings"`), or None where it keeps per-feature layers.

    Make it first to set up things that need the layer before the model is
    built (a `keras.distribution` layout map of its table paths, say), then
    pass it to `dlrm` (with the same `bag_sizes` and `combiner`)."""
    if isinstance(embeddings, StackedEmbedding):
        if stacked is False:
            raise ValueError(
                "stacked=False needs one layer per feature; received one "
                f"StackedEmbedding ({embeddings.name!r}).")
        if bag_sizes is not None and tuple(bag_sizes) != embeddings.bag_sizes:
            raise ValueError(
                f"bag_sizes={list(bag_sizes)} differ from the StackedEmbedding's "
                f"{list(embeddings.bag_sizes)}.")
        if embeddings.has_bags and combiner != embeddings.combiner:
            raise ValueError(
                f"The bag combiner {combiner!r} differs from the StackedEmbedding's "
                f"{embeddings.combiner!r}.")
        return embeddings
    if stacked not in (None, True, False):
        raise ValueError(f"`stacked` must be None, True or False. Received: {stacked!r}")
    if stacked is False:
        return None
    embeddings = list(embeddings)
    bag_sizes = check_bag_sizes(bag_sizes, len(embeddings))
    reasons = [unstackable_reason(layer, combiner) for layer in embeddings]
    if stacked is None and any(reasons):
        return None
    for layer, reason in zip(embeddings, reasons):
        if reason:
            raise ValueError(
                f"stacked=True: layer {layer.name!r} cannot be stacked ({reason}); "
                "pass stacked=False (or None to stack only when all layers can).")
    bags = dict(bag_sizes=list(bag_sizes), combiner=combiner)
    if len({layer.output_dim for layer in embeddings}) != 1:
        return None if stacked is None else StackedEmbedding.from_layers(
            embeddings, **bags)
    return StackedEmbedding.from_layers(embeddings, name="embeddings", **bags)


def unstackable_reason(layer, combiner=None):
    """Why `layer` cannot become a feature of a `StackedEmbedding` (None when
    it can): only plain `keras.layers.Embedding` and `MixedDimEmbedding`
    layers with nothing the stacked layer would drop. A feature whose bag
    the stacked layer combines with `combiner` takes a `MixedDimEmbedding`
    of that combiner (or none); otherwise a layer with a combiner stays on
    its own."""
    if type(layer) is layers.Embedding:
        if layer.embeddings_regularizer is not None or (
                layer.embeddings_constraint is not None):
            return "a regularizer or constraint on its table"
        if layer.mask_zero:
            return "mask_zero=True"
        if getattr(layer, "lora_enabled", False) or getattr(
                layer, "quantization_mode", None):
            return "LoRA or quantized weights"
        return None
    if type(layer) is MixedDimEmbedding:
        if layer.combiner is not None and layer.combiner != combiner:
            return (f"combiner={layer.combiner!r} (bags of ids)" if combiner is None
                    else f"combiner={layer.combiner!r}, not the bags' {combiner!r}")
        if layer.plan.has_qr_blocks:
            return "quotient-remainder blocks"
        if any(x is not None for x in (
                layer.embeddings_regularizer, layer.projection_regularizer,
                layer.embeddings_constraint, layer.projection_constraint)):
            return "a regularizer or constraint"
        if layer.mask_zero:
            return "mask_zero=True"
        return None
    return f"a {type(layer).__name__}, not an Embedding or MixedDimEmbedding"


def embedding_summary(embeddings):
    """Parameters and bytes of the embedding layers: everything stored
    (remaps, signatures, hash constants, frequency counts), a shared memory
    counted once (`keras_mixed_dim.embedding_bytes`).

    `embeddings` are per-feature layers or a `StackedEmbedding` (or a list
    holding one). Unbuilt layers are counted from their plans."""
    if isinstance(embeddings, StackedEmbedding):
        embeddings = [embeddings]
    params, pools = 0, set()
    for layer in embeddings:
        if isinstance(layer, HashedMemoryEmbedding) and layer.shared_memory:
            pool = layer._memory_layer
            if id(pool) not in pools:
                pools.add(id(pool))
                params += layer.memory_size
            continue
        if layer.built:
            params += layer.count_params()
        elif isinstance(layer, (StackedEmbedding, MixedDimEmbedding)):
            # unbuilt: every array of these layers is 4 bytes an entry
            params += layer.bytes // FLOAT_BYTES
        elif isinstance(layer, layers.Embedding):
            params += layer.input_dim * layer.output_dim
        else:
            params += layer.count_params()
    return {"params": int(params), "bytes": int(embedding_bytes(embeddings))}
