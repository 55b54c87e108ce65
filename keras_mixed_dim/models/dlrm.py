"""DLRM (Naumov et al. 2019) with uniform or mixed-dimension embeddings."""

import keras
import numpy as np
from keras import layers

from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.layers.dot_interaction import DotInteraction
from keras_mixed_dim.layers.hashed_memory_embedding import HashedMemoryEmbedding
from keras_mixed_dim.layers.hashed_memory_embedding import embedding_bytes
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
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
         stacked=False):
    """DLRM: bottom MLP on dense features, dot interaction, top MLP.

    Args:
        embeddings: One layer per categorical feature, each with output `dim`,
            or one `StackedEmbedding` for all features.
        dim: The embedding dim; the bottom MLP ends at `dim`.
        bottom: Hidden widths of the bottom MLP (then `dim`).
        top: Hidden widths of the top MLP (then 1, sigmoid).
        num_dense: Number of dense features.
        stacked: Look all features up in one `StackedEmbedding` (named
            `"embeddings"`) built from the per-feature layers' plans (and
            weights, when they are built): one gather per distinct width.

    Returns:
        A functional model on `{"dense": (batch, 13) float32, "categorical":
        (batch, F) int32}` giving click probabilities `(batch, 1)`.
    """
    stacked_layer = _stacked_layer(embeddings, stacked)
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
    interactions = DotInteraction(name="interaction")(vectors)
    z = layers.Concatenate(name="top_input")([x, interactions])
    for i, width in enumerate(top):
        z = layers.Dense(width, activation="relu", name=f"top_{i}")(z)
    probability = layers.Dense(1, activation="sigmoid", name="probability")(z)
    return IdSafeModel({"dense": dense, "categorical": categorical}, probability,
                       name="dlrm")


def _stacked_layer(embeddings, stacked):
    """The `StackedEmbedding` the DLRM uses, or None for per-feature layers."""
    if isinstance(embeddings, StackedEmbedding):
        return embeddings
    if not stacked:
        return None
    return StackedEmbedding.from_layers(list(embeddings), name="embeddings")


def embedding_summary(embeddings):
    """Parameters and bytes of the embedding layers: everything stored
    (remaps, signatures, hash constants), a shared memory counted once."""
    params, pools = 0, set()
    for layer in embeddings:
        if isinstance(layer, HashedMemoryEmbedding) and layer.shared_memory:
            pool = layer._memory_layer
            if id(pool) not in pools:
                pools.add(id(pool))
                params += layer.memory_size
            continue
        params += layer.count_params()
    return {"params": int(params), "bytes": int(embedding_bytes(embeddings))}
