"""One place that turns an embedding choice (and a byte budget) into a layer."""

import math

import keras
import numpy as np

from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.layers.hashed_memory_embedding import HashedMemoryEmbedding
from keras_mixed_dim.layers.hashed_memory_embedding import SharedMemory
from keras_mixed_dim.layers.hashed_memory_embedding import embedding_bytes
from keras_mixed_dim.layers.hashing_embedding import HashingEmbedding
from keras_mixed_dim.layers.qr_embedding import QREmbedding
from keras_mixed_dim.layers.qr_embedding import default_collisions
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan
from keras_mixed_dim.planning import plan_blocks

# "mixed" (MovieLens) and "block" (Criteo) are the same layer: frequency
# blocks inside the table; "table" is one narrower block with a projection.
EMBEDDING_KINDS = ("uniform", "mixed", "table", "block", "qr", "md_qr", "hashing",
                   "robe", "lma")
FLOAT_BYTES = 4
# Blocks of more rows than this are stored as QR pairs by "md_qr".
MD_QR_MIN_ROWS = 1024
# "lma" spends at most this share of its budget on signatures.
LMA_SIGNATURE_SHARE = 0.25


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
):
    """An embedding layer of any kind of the package, sized to a byte budget.

    Every kind maps ids `[0, input_dim)` to `output_dim` vectors, so they are
    interchangeable in a model. With `budget_bytes` the layer stores at most
    that many bytes, everything counted (tables, projections, id remaps,
    signatures, hash constants); where a kind cannot go that low its
    smallest form is used (see each kind). Check `layer_bytes(layer)`.

    Args:
        kind: One of `EMBEDDING_KINDS`:
            - `"uniform"`: `keras.layers.Embedding` (the reference; ignores
              `budget_bytes`).
            - `"mixed"` / `"block"`: `MixedDimEmbedding` with frequency
              blocks (arXiv:1909.11810); needs about 1 float per id at least.
            - `"table"`: one block narrower than `output_dim` plus a
              projection (DLRM's per-table mixed dims, for one table).
            - `"qr"`: `QREmbedding` ("mult") with the fewest collisions that
              fit (at least `2 sqrt(n) x output_dim` floats).
            - `"md_qr"`: mixed blocks, those above `qr_min_rows` rows stored
              as QR pairs, sized to use the budget.
            - `"hashing"`: `HashingEmbedding` (`id mod buckets`).
            - `"robe"`: `HashedMemoryEmbedding(hash="robe")`.
            - `"lma"`: `HashedMemoryEmbedding(hash="lsh")` with
              `signatures` for (at most) the first ids such that they take
              at most a quarter of the budget.
        input_dim: Number of ids.
        output_dim: Width of the vectors (the base dim for mixed kinds).
        counts: Per-id counts for the mixed kinds. Counts not in rank order
            add an id -> rank table (4 bytes per id); pass ranked ids (id 0
            most frequent) and `counts=None` to avoid it.
        budget_bytes: Optional byte budget of the layer.
        alpha, num_blocks: Planning arguments of the mixed kinds.
        budget: Parameter budget of the mixed kinds when `budget_bytes` is
            not given (the older argument).
        embeddings_regularizer: Regularizer of the tables ("uniform",
            "mixed", "block", "table", "hashing").
        name: Layer name.
        memory: Optional `SharedMemory` for "robe" / "lma" (then
            `budget_bytes` is ignored: the pool is sized by its maker).
        signatures: For "lma": minhash signatures from
            `keras_mixed_dim.layers.hashed_memory_embedding.lsh_signatures`
            (`(rows, signature_size)`, rows for the first ids); trimmed to
            the rows that fit the signature share of the budget.
        signature_size, hashes_per_element: LMA's signature width and the
            minhashes per key (when `signatures` is not given).
        seed: Hash seed ("hashing" ignores it; "robe" / "lma" use it).
        qr_min_rows: Blocks with more rows are QR pairs in "md_qr".
        combiner: None (one vector per id) or `"sum"` / `"mean"` /
            `"sqrtn"`: the layer combines a bag of ids (the last id axis).
            `"uniform"` with a combiner is a one-block `MixedDimEmbedding`
            (the same table; `keras.layers.Embedding` has no combiner).

    Returns:
        A Keras layer.

    Example:

    >>> layer = make_embedding("robe", 100_000, 16, budget_bytes=200_000)
    >>> layer(np.array([3, 99_999])).shape
    (2, 16)
    """
    if kind not in EMBEDDING_KINDS:
        raise ValueError(f"`kind` must be one of {EMBEDDING_KINDS}. Received: {kind!r}")
    if budget_bytes is not None and not budget_bytes > 0:
        raise ValueError(f"`budget_bytes` must be > 0. Received: {budget_bytes!r}")
    floats = None if budget_bytes is None else budget_bytes / FLOAT_BYTES
    if kind == "uniform" and combiner is not None:
        plan = BlockPlan(input_dim, output_dim, [Block(0, input_dim, output_dim)])
        return MixedDimEmbedding(input_dim, output_dim, plan=plan, combiner=combiner,
                                 embeddings_regularizer=embeddings_regularizer,
                                 name=name)
    if kind == "uniform":
        return keras.layers.Embedding(
            input_dim, output_dim, embeddings_regularizer=embeddings_regularizer,
            name=name)
    if kind in ("mixed", "block"):
        remap = _needs_remap(counts)
        if floats is not None:
            # below one float per id MD has no plan: use its smallest one
            budget = max(smallest_md_params(input_dim, output_dim, num_blocks),
                         floats - (input_dim if remap else 0))
        return MixedDimEmbedding(
            input_dim, output_dim, counts=counts, alpha=alpha,
            num_blocks=min(num_blocks, input_dim), budget=budget,
            embeddings_regularizer=embeddings_regularizer, combiner=combiner,
            name=name)
    if kind == "table":
        dim = output_dim
        if floats is not None:
            dim = int(floats // (input_dim + output_dim))
            if floats >= input_dim * output_dim:
                dim = output_dim
            dim = max(1, min(output_dim, dim))
        plan = BlockPlan(input_dim, output_dim, [Block(0, input_dim, dim)])
        return MixedDimEmbedding(input_dim, output_dim, plan=plan,
                                 embeddings_regularizer=embeddings_regularizer,
                                 combiner=combiner, name=name)
    if kind == "qr":
        m = default_collisions(input_dim)
        if floats is not None:
            m = qr_collisions_for(input_dim, output_dim, floats)
        return QREmbedding(input_dim, output_dim, num_collisions=m, combiner=combiner,
                           name=name)
    if kind == "md_qr":
        plan = md_qr_plan(input_dim, output_dim, floats, counts=counts, alpha=alpha,
                          num_blocks=num_blocks, qr_min_rows=qr_min_rows)
        return MixedDimEmbedding(input_dim, output_dim, plan=plan, counts=counts,
                                 combiner=combiner, name=name)
    if kind == "hashing":
        buckets = input_dim
        if floats is not None:
            buckets = max(1, min(input_dim, int(floats // output_dim)))
        return HashingEmbedding(input_dim, output_dim, buckets,
                                embeddings_initializer="uniform",
                                embeddings_regularizer=embeddings_regularizer,
                                combiner=combiner, name=name)
    # robe / lma
    hash_kind = "robe" if kind == "robe" else "lsh"
    options = {}
    if hash_kind == "lsh":
        rows = input_dim
        width = signature_size if signatures is None else np.shape(signatures)[1]
        if floats is not None:
            rows = int(floats * LMA_SIGNATURE_SHARE // width)
            rows = max(1, min(input_dim, rows))
        if signatures is not None:
            signatures = np.asarray(signatures)[:rows]
            rows = len(signatures)
        options = dict(signatures=signatures, signature_size=width,
                       signature_rows=rows,
                       hashes_per_element=min(hashes_per_element, width))
    if memory is not None:
        return HashedMemoryEmbedding(input_dim, output_dim, memory=memory,
                                     hash=hash_kind, seed=seed, name=name,
                                     combiner=combiner, **options)
    size = input_dim * output_dim
    probe = HashedMemoryEmbedding(input_dim, output_dim, 1, hash=hash_kind, seed=seed,
                                  **options)
    if floats is not None:
        size = max(1, int((budget_bytes - probe.auxiliary_bytes) // FLOAT_BYTES))
    return HashedMemoryEmbedding(input_dim, output_dim, size, hash=hash_kind,
                                 seed=seed, name=name, combiner=combiner, **options)


def smallest_md_params(input_dim, output_dim, num_blocks):
    """Parameters of the smallest mixed plan: every block at dim 1."""
    return input_dim + min(num_blocks, input_dim) * output_dim


def _needs_remap(counts):
    if counts is None:
        return False
    counts = np.asarray(counts)
    return bool(np.any(np.diff(counts) > 0))


def qr_collisions_for(input_dim, output_dim, floats):
    """Fewest collisions `m` with `(ceil(n / m) + m) x d <= floats`
    (`ceil(sqrt(n))`, QR's smallest form, when none fits)."""
    total = floats / output_dim
    smallest = default_collisions(input_dim)
    if total >= input_dim + 1:
        return 1
    disc = total * total - 4 * input_dim
    if disc < 0:
        return smallest
    m = max(1, int((total - math.sqrt(disc)) / 2))
    while m < smallest and -(-input_dim // m) + m > total:
        m += 1
    return min(m, smallest)


def md_qr_plan(input_dim, output_dim, floats=None, counts=None, alpha=0.3,
               num_blocks=4, qr_min_rows=MD_QR_MIN_ROWS):
    """A mixed-dim plan with QR blocks, as large as fits `floats` (bytes / 4,
    the id remap included). Without `floats`: the plain MD plan's dims."""
    num_blocks = min(num_blocks, input_dim)

    def plan(budget, shrink=1.0):
        def collisions(rows):
            return max(1, math.ceil(math.sqrt(rows) * shrink))

        return plan_blocks(input_dim, output_dim, counts=counts, num_blocks=num_blocks,
                           alpha=alpha, budget=budget, qr_min_rows=qr_min_rows,
                           qr_collisions=collisions)

    if floats is None:
        return plan(None)
    # QR shrinks the big blocks after sizing, so search the sizing budget
    # whose QR plan uses the byte budget best.
    target = floats * FLOAT_BYTES
    low = float(smallest_md_params(input_dim, output_dim, num_blocks))
    high = float(input_dim * output_dim + num_blocks * output_dim ** 2)
    best = plan(low)
    if best.bytes > target:
        return best
    if plan(high).bytes <= target:
        # every block at full width still fits: spend the rest on fewer
        # collisions (taller quotient tables) in the QR blocks
        low_shrink = 1.0 / max(1.0, math.sqrt(input_dim))
        tallest = plan(high, low_shrink)
        if tallest.bytes <= target:
            return tallest
        return _best_fitting(lambda shrink: plan(high, shrink), 1.0, low_shrink, target)
    return _best_fitting(plan, low, high, target)


def _best_fitting(make_plan, fitting, failing, target):
    """Geometric bisection between a value whose plan fits `target` bytes and
    one whose plan does not; the fitting plan found closest to `failing`."""
    best = make_plan(fitting)
    for _ in range(40):
        middle = math.sqrt(fitting * failing)
        candidate = make_plan(middle)
        if candidate.bytes <= target:
            best, fitting = candidate, middle
        else:
            failing = middle
        if max(fitting, failing) / min(fitting, failing) < 1.001:
            break
    return best


def make_shared_memory(budget_bytes, embeddings_aux_bytes=0, name="shared_memory"):
    """A `SharedMemory` holding what is left of `budget_bytes` after the
    layers' auxiliary bytes (signatures, hash constants)."""
    size = max(1, int((budget_bytes - embeddings_aux_bytes) // FLOAT_BYTES))
    return SharedMemory(size, name=name)


def layer_bytes(layers):
    """Bytes of embedding layers, each shared memory counted once."""
    if not isinstance(layers, (list, tuple)):
        layers = [layers]
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
