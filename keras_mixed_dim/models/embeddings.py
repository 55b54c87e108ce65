"""One place that turns an embedding kind (and a byte budget) into a layer."""

import warnings

from keras_mixed_dim.budgets import budget_of
from keras_mixed_dim.budgets import embedding_bytes
from keras_mixed_dim.budgets import uniform_bytes
from keras_mixed_dim.budgets import warn_budget_deprecated
from keras_mixed_dim.budgets import refuse_budget_with_new
from keras_mixed_dim.models.kinds import EMBEDDING_KINDS
from keras_mixed_dim.models.kinds import LMA_SIGNATURE_SHARE
from keras_mixed_dim.models.kinds import MD_QR_MIN_ROWS
from keras_mixed_dim.models.kinds import get_kind
from keras_mixed_dim.models.kinds import make_shared_memory
from keras_mixed_dim.models.kinds import md_qr_plan
from keras_mixed_dim.models.kinds import qr_collisions_for
from keras_mixed_dim.models.kinds import smallest_md_params


def make_embedding(
    kind,
    input_dim,
    output_dim,
    counts=None,
    budget_bytes=None,
    alpha=0.3,
    num_blocks=4,
    budget=None,
    embeddings_regularizer=None,
    name=None,
    memory=None,
    signatures=None,
    signature_size=2,
    hashes_per_element=1,
    seed=0,
    qr_min_rows=MD_QR_MIN_ROWS,
    combiner=None,
    budget_fraction=None,
    block_min_rows=None,
):
    """An embedding layer of any kind of the package, sized to a byte budget.

    Every kind maps ids `[0, input_dim)` to `output_dim` vectors, so they are
    interchangeable in a model. With `budget_bytes` (or `budget_fraction`)
    the layer stores at most that many bytes, everything counted (tables,
    projections, id remaps, signatures, hash constants): its `bytes`, or
    `keras_mixed_dim.embedding_bytes(layer)`.

    Example:

    >>> layer = make_embedding("qr", 10_000, 16, budget_fraction=0.0625)
    >>> layer.bytes <= 0.0625 * 4 * 10_000 * 16
    True

    Args:
        kind: One of `keras_mixed_dim.models.kinds.kind_names()` (the
            built-in ones are `EMBEDDING_KINDS`):
            - `"uniform"`: `keras.layers.Embedding` (the reference; a budget
              below its table is refused).
            - `"mixed"`: `MixedDimEmbedding` with frequency blocks
              (arXiv:1909.11810); needs about 1 float per id at least.
            - `"table"`: one block narrower than `output_dim` plus a
              projection (DLRM's per-table mixed dims, for one table).
            - `"table_blocks"`: `"table"`, then frequency blocks inside the
              table when it has at least `block_min_rows` rows.
            - `"qr"`: `QREmbedding` ("mult") with the fewest collisions that
              fit (at least `2 sqrt(n) x output_dim` floats).
            - `"md_qr"`: mixed blocks, those above `qr_min_rows` rows stored
              as QR pairs, sized to use the budget.
            - `"hashing"`: `HashingEmbedding` (`id mod buckets`).
            - `"robe"`: `HashedMemoryEmbedding(hash="robe")`.
            - `"lma"`: `HashedMemoryEmbedding(hash="lsh")` with
              `signatures` for (at most) the first ids such that they take
              at most a quarter of the budget.
            `"block"` is a deprecated name of `"mixed"` here.
        input_dim: Number of ids.
        output_dim: Width of the vectors (the base dim for mixed kinds).
        counts: Per-id counts for the mixed kinds. Counts not in rank order
            add an id -> rank table (4 bytes per id, paid from the budget);
            pass ranked ids (id 0 most frequent) and `counts=None` to avoid
            it.
        budget_bytes: Optional byte budget of the layer.
        alpha, num_blocks: Planning arguments of the mixed kinds.
        budget: Deprecated: a parameter budget of `"mixed"` (tables plus
            projections, as `MixedDimEmbedding`'s old `budget`).
        embeddings_regularizer: Regularizer of the tables ("uniform",
            "mixed", "table", "table_blocks", "qr", "md_qr", "hashing").
        name: Layer name.
        memory: Optional `SharedMemory` for "robe" / "lma" (then the budget
            only sizes the signatures: the pool is sized by its maker).
        signatures: For "lma": minhash signatures from
            `keras_mixed_dim.layers.hashed_memory_embedding.lsh_signatures`
            (`(rows, signature_size)`, rows for the first ids); trimmed to
            the rows that fit the signature share of the budget.
        signature_size, hashes_per_element: LMA's signature width and the
            minhashes per key (when `signatures` is not given).
        seed: Hash seed ("robe" / "lma").
        qr_min_rows: Blocks with more rows are QR pairs in "md_qr".
        combiner: None (one vector per id) or `"sum"` / `"mean"` /
            `"sqrtn"`: the layer combines a bag of ids (the last id axis).
            `"uniform"` with a combiner is a one-block `MixedDimEmbedding`
            (the same table; `keras.layers.Embedding` has no combiner).
        budget_fraction: Alternative to `budget_bytes`: a fraction in
            (0, 1] of the uniform float32 table's bytes, e.g. `0.0625`.
        block_min_rows: `"table_blocks"`: smallest table that gets blocks
            (default 10,000).

    Returns:
        An unbuilt Keras layer.

    Raises:
        ValueError: for an unknown kind, both budgets, or a budget below the
            kind's smallest layer (naming the budget and the minimum).
    """
    spec = get_kind(kind, "make_embedding")
    spend = budget_of(budget_bytes, budget_fraction, uniform_bytes(input_dim, output_dim))
    options = dict(alpha=alpha, num_blocks=num_blocks, memory=memory,
                   signatures=signatures, signature_size=signature_size,
                   hashes_per_element=hashes_per_element, seed=seed,
                   qr_min_rows=qr_min_rows)
    if block_min_rows is not None:
        options["block_min_rows"] = block_min_rows
    if budget is not None:
        if spec.name != "mixed":
            raise ValueError(
                f"The deprecated `budget` (parameters) is for kind 'mixed' only; "
                f"kind {spec.name!r} takes `budget_bytes` or `budget_fraction`.")
        warn_budget_deprecated("make_embedding", "a number of parameters of kind "
                               "'mixed' (tables plus projections)",
                               "budget_bytes or budget_fraction")
        refuse_budget_with_new(budget, budget_bytes, budget_fraction)
        options["budget_params"] = budget
    unused = [k for k in ("memory", "signatures") if options[k] is not None
              and k not in spec.options]
    if unused:
        raise ValueError(f"Kind {spec.name!r} takes no {unused[0]!r}; it is for "
                         "'robe' / 'lma'.")
    return spec.build(
        input_dim, output_dim, budget=spend, counts=counts, combiner=combiner,
        embeddings_regularizer=embeddings_regularizer, name=name,
        **{k: v for k, v in options.items() if k in spec.options})


def layer_bytes(layers):
    """Deprecated (removed in 0.4.0): `keras_mixed_dim.embedding_bytes`."""
    warnings.warn("`layer_bytes` is deprecated and will be removed in 0.4.0; use "
                  "`keras_mixed_dim.embedding_bytes` (the same count).",
                  DeprecationWarning, stacklevel=2)
    return embedding_bytes(layers)


def embedding_params(model, names):
    """Parameters of the named embedding layers of `model`.

    Args:
        model: A Keras model.
        names: Names of its embedding layers (a `StackedEmbedding`'s
            `feature_names` count as layers).

    Returns:
        The number of parameters (every weight of those layers) as an int.

    Example:

    >>> embedding_params(model, ["user_embedding", "item_embedding"])  # doctest: +SKIP
    """
    return sum(model.get_layer(name).count_params() for name in names)


__all__ = [
    "EMBEDDING_KINDS",
    "LMA_SIGNATURE_SHARE",
    "MD_QR_MIN_ROWS",
    "embedding_params",
    "layer_bytes",
    "make_embedding",
    "make_shared_memory",
    "md_qr_plan",
    "qr_collisions_for",
    "smallest_md_params",
]
