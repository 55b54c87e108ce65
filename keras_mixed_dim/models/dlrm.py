"""DLRM (Naumov et al. 2019) with uniform or mixed-dimension embeddings."""

import keras
import numpy as np
from keras import layers

from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.layers.dot_interaction import DotInteraction
from keras_mixed_dim.layers.hashed_memory_embedding import HashedMemoryEmbedding
from keras_mixed_dim.layers.hashed_memory_embedding import embedding_bytes
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
from keras_mixed_dim.models.cross import cross_network
from keras_mixed_dim.models.embeddings import make_embedding
from keras_mixed_dim.models.embeddings import make_shared_memory
from keras_mixed_dim.models.id_safe import IdSafeModel
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan
from keras_mixed_dim.planning import md_solver
from keras_mixed_dim.planning import plan_blocks

EMBEDDING_MODES = ("uniform", "table", "block", "qr", "md_qr", "hashing", "robe",
                   "lma")
SHARED_MEMORY_MODES = ("robe", "lma")
INTERACTIONS = ("dot", "dcnv2")


def table_dims(cardinalities, dim, mode, alpha=0.3, budget=None):
    """Per-table dims: `dim` each for uniform, else DLRM's `md_solver`."""
    if mode == "uniform":
        return [dim] * len(cardinalities)
    if budget is not None:
        dims = md_solver(cardinalities, alpha, budget=budget)
    else:
        dims = md_solver(cardinalities, alpha, base_dim=dim)
    return [int(min(d, dim)) for d in dims]


def embedding_layers(cardinalities, dim, mode, alpha=0.3, budget=None, counts=None,
                     num_blocks=4, block_min_rows=10_000, budget_bytes=None,
                     share_memory=True, signatures=None, seed=0):
    """One embedding layer per categorical feature, all with output `dim`.

    Args:
        cardinalities: Rows per feature.
        dim: The common dimension (DLRM's `d`).
        mode: One of `EMBEDDING_MODES`: `"uniform"` (every table `dim`
            wide), `"table"` (one dim per table from `md_solver`, as DLRM's
            `--md-flag`), `"block"` (per table, then frequency blocks inside
            tables of at least `block_min_rows` rows, the top block at the
            table's dim), or a compressed kind of
            `keras_mixed_dim.models.make_embedding` (`"qr"`, `"md_qr"`,
            `"hashing"`, `"robe"`, `"lma"`), each feature getting the share
            of `budget_bytes` its uniform table would have.
        alpha, budget: Power-rule temperature and optional parameter budget
            (`"table"` / `"block"`).
        counts: Optional per-feature counts per index (rank order or not)
            for the blocks; without them ids are taken as ranked.
        num_blocks: Blocks per large table in `"block"` / `"md_qr"` mode.
        block_min_rows: Smallest table that gets blocks in `"block"` mode.
        budget_bytes: Total byte budget of all embeddings (everything
            counted). Required for the compressed kinds; for `"table"` /
            `"block"` it sets `budget` to `budget_bytes / 4` parameters.
        share_memory: `"robe"` / `"lma"`: all features read one
            `SharedMemory` (named `"shared_memory"`) of what the budget
            leaves after signatures and hash constants; each feature hashes
            with its own seed.
        signatures: `"lma"`: optional per-feature minhash signatures (from
            `lsh_signatures`), a list with None for features without.
        seed: Base hash seed (feature `f` uses `seed + f`).
    """
    if mode not in EMBEDDING_MODES:
        raise ValueError(f"`mode` must be one of {EMBEDDING_MODES}. Received: {mode!r}")
    if mode in ("uniform", "table", "block"):
        if budget_bytes is not None and mode != "uniform":
            budget = budget_bytes / 4
        return _md_layers(cardinalities, dim, mode, alpha, budget, counts, num_blocks,
                          block_min_rows)
    if budget_bytes is None:
        raise ValueError(f"mode={mode!r} needs `budget_bytes`.")
    total_rows = float(sum(cardinalities))
    shares = [budget_bytes * rows / total_rows for rows in cardinalities]

    def build(memory=None):
        return [
            make_embedding(
                mode, rows, dim,
                counts=None if counts is None else np.asarray(counts[f]),
                budget_bytes=shares[f], alpha=alpha, num_blocks=num_blocks,
                signatures=None if signatures is None else signatures[f],
                seed=seed + f, memory=memory, name=f"embedding_{f}")
            for f, rows in enumerate(cardinalities)
        ]

    result = build()
    if mode in SHARED_MEMORY_MODES and share_memory:
        # the same layers, reading one pool of what the budget leaves
        auxiliary = sum(layer.auxiliary_bytes for layer in result)
        result = build(memory=make_shared_memory(budget_bytes, auxiliary))
    return result


def _md_layers(cardinalities, dim, mode, alpha, budget, counts, num_blocks,
               block_min_rows):
    dims = table_dims(cardinalities, dim, mode, alpha, budget)
    result = []
    for f, (rows, table_dim) in enumerate(zip(cardinalities, dims)):
        name = f"embedding_{f}"
        if mode == "uniform":
            result.append(layers.Embedding(rows, dim, name=name))
            continue
        feature_counts = None if counts is None else np.asarray(counts[f])
        if mode == "block" and rows >= block_min_rows:
            plan = plan_blocks(rows, dim, counts=feature_counts, num_blocks=num_blocks,
                               alpha=alpha, base_dim=table_dim)
        else:
            plan = BlockPlan(rows, dim, [Block(0, rows, table_dim)])
            feature_counts = None
        result.append(MixedDimEmbedding(rows, dim, plan=plan, counts=feature_counts,
                                        name=name))
    return result


def dlrm(embeddings, dim, bottom=(512, 256, 64), top=(512, 256), num_dense=13,
         stacked=None, interaction="dot", cross_layers=3, cross_rank=512):
    """DLRM: bottom MLP on dense features, an interaction, top MLP.

    By default all features are looked up in one `StackedEmbedding` (named
    `"embeddings"`, its features named after the per-feature layers) when
    every layer is one it can take: a plain `keras.layers.Embedding` or a
    `MixedDimEmbedding` with one id per feature (the `"uniform"`, `"table"`
    and `"block"` modes of `embedding_layers`); other kinds (QR, MD + QR,
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
        interaction: `"dot"` (DLRM's pairwise dot products, concatenated
            with the bottom MLP's output) or `"dcnv2"` (MLPerf's DLRM-DCNv2:
            the bottom output and every feature vector concatenated, then
            `cross_layers` `LowRankCross` layers of rank `cross_rank`, named
            `cross_0`, ...; the top MLP reads their output).
        cross_layers, cross_rank: The DCNv2 cross network (MLPerf: 3, 512).

    Returns:
        A functional model on `{"dense": (batch, 13) float32, "categorical":
        (batch, F) int32}` giving click probabilities `(batch, 1)`.
    """
    if interaction not in INTERACTIONS:
        raise ValueError(f"`interaction` must be one of {INTERACTIONS}. "
                         f"Received: interaction={interaction!r}")
    stacked_layer = stack_embeddings(embeddings, stacked)
    num_features = (stacked_layer.num_features if stacked_layer is not None
                    else len(embeddings))
    dense = keras.Input(shape=(num_dense,), dtype="float32", name="dense")
    categorical = keras.Input(shape=(num_features,), dtype="int32",
                              name="categorical")
    x = dense
    for i, width in enumerate((*bottom, dim)):
        x = layers.Dense(width, activation="relu", name=f"bottom_{i}")(x)
    if stacked_layer is not None:
        looked_up = stacked_layer(categorical)
        vectors = [x] + [looked_up[:, f] for f in range(num_features)]
    else:
        vectors = [x] + [
            embedding(categorical[:, f]) for f, embedding in enumerate(embeddings)
        ]
    z = _interact(vectors, interaction, cross_layers, cross_rank)
    for i, width in enumerate(top):
        z = layers.Dense(width, activation="relu", name=f"top_{i}")(z)
    probability = layers.Dense(1, activation="sigmoid", name="probability")(z)
    return IdSafeModel({"dense": dense, "categorical": categorical}, probability,
                       name="dlrm")


def _interact(vectors, interaction, cross_layers, cross_rank):
    """The top MLP's input from `[bottom output, feature vectors...]`."""
    if interaction == "dcnv2":
        x0 = layers.Concatenate(name="interaction")(vectors)
        return cross_network(x0, cross_layers, cross_rank, name="cross")
    interactions = DotInteraction(name="interaction")(vectors)
    return layers.Concatenate(name="top_input")([vectors[0], interactions])


def stack_embeddings(embeddings, stacked=None):
    """The `StackedEmbedding` that `dlrm(embeddings, stacked=stacked)` uses
    (named `"embeddings"`), or None where it keeps per-feature layers.

    Make it first to set up things that need the layer before the model is
    built (a `keras.distribution` layout map of its table paths, say), then
    pass it to `dlrm`."""
    if isinstance(embeddings, StackedEmbedding):
        if stacked is False:
            raise ValueError(
                "stacked=False needs one layer per feature; received one "
                f"StackedEmbedding ({embeddings.name!r}).")
        return embeddings
    if stacked not in (None, True, False):
        raise ValueError(f"`stacked` must be None, True or False. Received: {stacked!r}")
    if stacked is False:
        return None
    embeddings = list(embeddings)
    reasons = [unstackable_reason(layer) for layer in embeddings]
    if stacked is None and any(reasons):
        return None
    for layer, reason in zip(embeddings, reasons):
        if reason:
            raise ValueError(
                f"stacked=True: layer {layer.name!r} cannot be stacked ({reason}); "
                "pass stacked=False (or None to stack only when all layers can).")
    if len({layer.output_dim for layer in embeddings}) != 1:
        return None if stacked is None else StackedEmbedding.from_layers(embeddings)
    return StackedEmbedding.from_layers(embeddings, name="embeddings")


def unstackable_reason(layer):
    """Why `layer` cannot become a feature of a `StackedEmbedding` (None when
    it can): only plain `keras.layers.Embedding` and `MixedDimEmbedding`
    layers with one id per feature and nothing the stacked layer would drop."""
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
        if layer.combiner is not None:
            return f"combiner={layer.combiner!r} (bags of ids)"
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
    (remaps, signatures, hash constants), a shared memory counted once.

    `embeddings` are per-feature layers or a `StackedEmbedding` (or a list
    holding one). Unbuilt `Embedding` / `MixedDimEmbedding` layers (those a
    stacked DLRM took its plans from) are counted from their plans."""
    if isinstance(embeddings, StackedEmbedding):
        embeddings = [embeddings]
    params, pools = 0, set()
    for layer in embeddings:
        if isinstance(layer, StackedEmbedding):
            params += _stacked_params(layer)
            continue
        if not layer.built and type(layer) in (layers.Embedding, MixedDimEmbedding):
            plan = getattr(layer, "plan", None)
            if plan is None:
                params += layer.input_dim * layer.output_dim
            else:
                params += plan.params + (plan.input_dim if plan.remapped else 0)
                if layer.count_frequencies:
                    params += plan.input_dim
            continue
        if isinstance(layer, HashedMemoryEmbedding) and layer.shared_memory:
            pool = layer._memory_layer
            if id(pool) not in pools:
                pools.add(id(pool))
                params += layer.memory_size
            continue
        params += layer.count_params()
    return {"params": int(params), "bytes": int(embedding_bytes(embeddings))}


def _stacked_params(layer):
    """What `count_params` gives once built (remap and counts included)."""
    if layer.built:
        return layer.count_params()
    params = (layer.plan_bytes - (4 * int(layer.input_dims.sum()) if layer.remapped
                                  else 0)) // 4
    params += int(layer.input_dims.sum()) if layer.remapped else 0
    return params + int(np.sum(np.where(layer.counting, layer.input_dims, 0)))
