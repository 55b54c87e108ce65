"""The embedding kinds of the package: one registry, name -> builders.

Every way to store a table the package offers is one `EmbeddingKind` here,
under one name: `make_embedding` builds one table of a kind, `dlrm`'s
`embedding_layers` one table per feature, the examples' `--embedding` flag
lists the names, and `compress_model` converts a trained table to the kinds
that have a converter. Each kind's builder sizes the layer to a byte budget
(`keras_mixed_dim.budgets`: every array the layer holds counted).

```python
from keras_mixed_dim.budgets import budget_of
from keras_mixed_dim.models.kinds import EMBEDDING_KINDS, get_kind

get_kind("qr").build(10_000, 16, budget=budget_of(budget_bytes=64_000))
```
"""

import dataclasses
import math
import warnings
from typing import Callable
from typing import Optional

import keras
import numpy as np

from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.budgets import Budget
from keras_mixed_dim.budgets import BudgetTooSmall
from keras_mixed_dim.layers.hashed_memory_embedding import HashedMemoryEmbedding
from keras_mixed_dim.layers.hashed_memory_embedding import SharedMemory
from keras_mixed_dim.layers.hashing_embedding import HashingEmbedding
from keras_mixed_dim.layers.mixed_dim_embedding import MixedDimEmbedding
from keras_mixed_dim.layers.qr_embedding import QREmbedding
from keras_mixed_dim.layers.qr_embedding import default_collisions
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan
from keras_mixed_dim.planning import block_dims
from keras_mixed_dim.planning import md_solver
from keras_mixed_dim.planning import plan_blocks

# Blocks of more rows than this are stored as QR pairs by "md_qr".
MD_QR_MIN_ROWS = 1024
# "lma" spends at most this share of its budget on signatures.
LMA_SIGNATURE_SHARE = 0.25
# "table_blocks": tables of fewer rows stay one block.
BLOCK_MIN_ROWS = 10_000


@dataclasses.dataclass(frozen=True)
class EmbeddingKind:
    """One way to store an embedding table.

    Attributes:
        name: The kind's one name.
        summary: One line on what the layer stores.
        build: `build(input_dim, output_dim, budget=None, **options)`: one
            unbuilt layer; `budget` a `keras_mixed_dim.budgets.Budget` or
            None (the kind's default size). Raises `BudgetTooSmall` (naming
            the budget and the smallest one) when no plan fits.
        options: The keyword options `build` reads besides the common ones
            (`counts`, `combiner`, `name`, `embeddings_regularizer`).
        build_features: Optional `build_features(cardinalities, dim, budget,
            counts, combiners, options)`: one layer per feature, planned
            together (DLRM's per-table dims). Default: each feature gets the
            share of the budget its uniform table would have (a feature
            whose share is below its smallest plan gets that plan, and the
            rest is shared among the others).
        convert: Optional `convert(layer, counts, budget_bytes, options)` ->
            `(new_layer, bytes_after, details)`: the kind made from a trained
            `keras.layers.Embedding` (`compress_model`).
        needs_budget: Whether the kind has no default size and needs one.
        shared_memory: Whether the features of a model can share one memory.

    Example:

    >>> from keras_mixed_dim.budgets import budget_of
    >>> kind = get_kind("table")
    >>> layer = kind.build(1000, 16, budget=budget_of(budget_fraction=0.25,
    ...                                               uniform=4 * 1000 * 16))
    >>> layer.plan.dims
    (3,)
    """

    name: str
    summary: str
    build: Optional[Callable] = None
    options: tuple = ()
    build_features: Optional[Callable] = None
    convert: Optional[Callable] = None
    needs_budget: bool = False
    shared_memory: bool = False


_KINDS = {}
# Names of the package's kinds (set once they are registered, below).
_BUILT_IN = ()
# Old names: (name, where) -> the kind it meant there. A name that meant
# two kinds in two places keeps each meaning, with a warning, for 0.3.x.
_DEPRECATED = {
    ("block", "make_embedding"): "mixed",
    ("block", "dlrm"): "table_blocks",
    ("md", "compress_model"): "mixed",
}


def register_kind(kind):
    """Adds (or replaces) a kind of the registry.

    Args:
        kind: An `EmbeddingKind`; its name must not be a deprecated name.

    Returns:
        The kind.

    Example:

    >>> register_kind(EmbeddingKind("half_qr", "QR at half the bytes",
    ...     lambda n, d, budget=None, **options: get_kind("qr").build(
    ...         n, d, budget=budget_of(budget_fraction=0.5, uniform=4 * n * d))))
    ... # doctest: +SKIP
    """
    if not isinstance(kind, EmbeddingKind):
        raise ValueError(f"`kind` must be an EmbeddingKind. Received: {kind!r}")
    if not isinstance(kind.name, str) or not kind.name:
        raise ValueError(f"A kind's name must be a non-empty string. Received: "
                         f"{kind.name!r}")
    if any(kind.name == old for old, _ in _DEPRECATED):
        raise ValueError(f"{kind.name!r} is a deprecated kind name; pick another.")
    existing = _KINDS.get(kind.name)
    # a built-in name keeps its layers (one name, one meaning); only its
    # converter may be replaced (`compress.register_method`)
    if existing is not None and kind.name in _BUILT_IN and (
            kind.build, kind.build_features) != (existing.build, existing.build_features):
        raise ValueError(f"{kind.name!r} is a kind of the package; register your "
                         "kind under another name.")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name):
    """Removes a kind added with `register_kind` (or `register_method`).

    Args:
        name: The kind's name; the package's own kinds cannot be removed.

    Example:

    >>> unregister_kind("half_qr")                          # doctest: +SKIP
    """
    if name in _BUILT_IN:
        raise ValueError(f"{name!r} is a kind of the package; it cannot be removed.")
    _KINDS.pop(name, None)


def kind_names():
    """The names of the registered kinds, built-in ones first.

    Returns:
        A tuple of names.

    Example:

    >>> kind_names()[:4]
    ('uniform', 'mixed', 'table', 'table_blocks')
    """
    return tuple(_KINDS)


def get_kind(name, where="make_embedding"):
    """The `EmbeddingKind` called `name`.

    Args:
        name: A kind name (see `kind_names()`), or a deprecated one.
        where: Which API asks (`"make_embedding"`, `"dlrm"`,
            `"compress_model"`): an old name meant a kind there.

    Returns:
        An `EmbeddingKind`.

    Raises:
        ValueError: naming `name` and the known kinds.

    Example:

    >>> get_kind("md_qr").needs_budget
    True
    """
    if isinstance(name, str) and (name, where) in _DEPRECATED:
        new = _DEPRECATED[(name, where)]
        warnings.warn(
            f"Embedding kind {name!r} is deprecated in {where} and will be removed in "
            f"0.4.0: it is {new!r} there. Pass {new!r}."
            + (" ('block' also named 'table_blocks' in dlrm and 'mixed' in "
               "make_embedding: one name, two kinds.)" if name == "block" else ""),
            DeprecationWarning, stacklevel=3)
        name = new
    if not isinstance(name, str) or name not in _KINDS:
        raise ValueError(f"Unknown embedding kind {name!r}; the kinds are "
                         f"{kind_names()}.")
    return _KINDS[name]


# ---- one table -------------------------------------------------------------


def _uniform(input_dim, output_dim, budget=None, counts=None, combiner=None,
             embeddings_regularizer=None, name=None):
    if budget is not None and budget.bytes < FLOAT_BYTES * input_dim * output_dim:
        raise budget.too_small(FLOAT_BYTES * input_dim * output_dim,
                               "the uniform table is stored whole")
    if combiner is None:
        return keras.layers.Embedding(input_dim, output_dim,
                                      embeddings_regularizer=embeddings_regularizer,
                                      name=name)
    # keras.layers.Embedding has no combiner: the same table as one block
    plan = BlockPlan(input_dim, output_dim, [Block(0, input_dim, output_dim)])
    return MixedDimEmbedding(input_dim, output_dim, plan=plan, combiner=combiner,
                             embeddings_regularizer=embeddings_regularizer, name=name)


def _mixed(input_dim, output_dim, budget=None, counts=None, combiner=None,
           embeddings_regularizer=None, name=None, alpha=0.3, num_blocks=4,
           budget_params=None):
    options = {}
    if budget_params is not None:
        # the deprecated parameter budget, planned as before
        options["budget"] = budget_params
    elif budget is not None:
        options["budget_bytes"] = budget.bytes
    try:
        with warnings.catch_warnings():
            # the caller warned about the deprecated parameter budget
            warnings.simplefilter("ignore", DeprecationWarning)
            return MixedDimEmbedding(
                input_dim, output_dim, counts=counts, alpha=alpha,
                num_blocks=min(num_blocks, input_dim),
                embeddings_regularizer=embeddings_regularizer, combiner=combiner,
                name=name, **options)
    except BudgetTooSmall as error:
        if budget is None or budget_params is not None:
            raise
        raise budget.too_small(error.minimum, error.detail) from None


def _table(input_dim, output_dim, budget=None, counts=None, combiner=None,
           embeddings_regularizer=None, name=None):
    dim = output_dim
    if budget is not None:
        floats = budget.bytes / FLOAT_BYTES
        if floats < input_dim * output_dim:
            # a narrower table pays for its projection
            dim = min(output_dim, int(floats // (input_dim + output_dim)))
            if dim < 1:
                raise budget.too_small(
                    FLOAT_BYTES * (input_dim + (output_dim if output_dim > 1 else 0)),
                    "one column per id and its projection")
    plan = BlockPlan(input_dim, output_dim, [Block(0, input_dim, dim)])
    return MixedDimEmbedding(input_dim, output_dim, plan=plan,
                             embeddings_regularizer=embeddings_regularizer,
                             combiner=combiner, name=name)


def _table_blocks(input_dim, output_dim, budget=None, counts=None, combiner=None,
                  embeddings_regularizer=None, name=None, alpha=0.3, num_blocks=4,
                  block_min_rows=BLOCK_MIN_ROWS):
    return _table_blocks_features(
        [input_dim], output_dim, budget, None if counts is None else [counts],
        [combiner], dict(alpha=alpha, num_blocks=num_blocks,
                         block_min_rows=block_min_rows,
                         embeddings_regularizer=embeddings_regularizer),
        names=[name])[0]


def _qr(input_dim, output_dim, budget=None, counts=None, combiner=None,
        embeddings_regularizer=None, name=None):
    m = default_collisions(input_dim)
    if budget is not None:
        floats = budget.bytes / FLOAT_BYTES
        smallest = (-(-input_dim // m) + m) * output_dim
        if floats < smallest:
            raise budget.too_small(FLOAT_BYTES * smallest,
                                   f"{m} collisions, ceil(sqrt(n))")
        m = qr_collisions_for(input_dim, output_dim, floats)
    return QREmbedding(input_dim, output_dim, num_collisions=m, combiner=combiner,
                       embeddings_regularizer=embeddings_regularizer, name=name)


def _md_qr(input_dim, output_dim, budget=None, counts=None, combiner=None,
           embeddings_regularizer=None, name=None, alpha=0.3, num_blocks=4,
           qr_min_rows=MD_QR_MIN_ROWS):
    plan = md_qr_plan(input_dim, output_dim, counts=counts, alpha=alpha,
                      num_blocks=num_blocks, qr_min_rows=qr_min_rows, budget=budget)
    return MixedDimEmbedding(input_dim, output_dim, plan=plan, counts=counts,
                             embeddings_regularizer=embeddings_regularizer,
                             combiner=combiner, name=name)


def _hashing(input_dim, output_dim, budget=None, counts=None, combiner=None,
             embeddings_regularizer=None, name=None):
    buckets = input_dim
    if budget is not None:
        probe = HashingEmbedding(input_dim, output_dim, 1)
        constants = probe.bytes - FLOAT_BYTES * output_dim
        buckets = min(input_dim, int((budget.bytes - constants) // (
            FLOAT_BYTES * output_dim)))
        if buckets < 1:
            raise budget.too_small(probe.bytes, "one bucket")
    return HashingEmbedding(input_dim, output_dim, buckets,
                            embeddings_initializer="uniform",
                            embeddings_regularizer=embeddings_regularizer,
                            combiner=combiner, name=name)


def _hashed_memory(hash_kind):
    def build(input_dim, output_dim, budget=None, counts=None, combiner=None,
              embeddings_regularizer=None, name=None, memory=None, signatures=None,
              signature_size=2, hashes_per_element=1, seed=0):
        if embeddings_regularizer is not None:
            raise ValueError(f"Kind {('robe' if hash_kind == 'robe' else 'lma')!r} "
                             "takes no `embeddings_regularizer` (its memory is "
                             "shared by many ids); pass None.")
        options = {}
        if hash_kind == "lsh":
            rows = input_dim
            width = signature_size if signatures is None else np.shape(signatures)[1]
            if budget is not None:
                rows = int(budget.bytes / FLOAT_BYTES * LMA_SIGNATURE_SHARE // width)
                rows = max(1, min(input_dim, rows))
            if signatures is not None:
                signatures = np.asarray(signatures)[:rows]
                rows = len(signatures)
            options = dict(signatures=signatures, signature_size=width,
                           signature_rows=rows,
                           hashes_per_element=min(hashes_per_element, width))
        size = input_dim * output_dim
        if budget is not None:
            probe = HashedMemoryEmbedding(input_dim, output_dim, 1, hash=hash_kind,
                                          seed=seed, **options)
            size = int((budget.bytes - probe.auxiliary_bytes) // FLOAT_BYTES)
            if size < 1 and hash_kind == "lsh" and options["signature_rows"] > 1:
                # the signature share left no memory: one signature row, so
                # the smallest budget is the same at any size
                options.update(signature_rows=1, signatures=None if signatures is None
                               else signatures[:1])
                probe = HashedMemoryEmbedding(input_dim, output_dim, 1, hash=hash_kind,
                                              seed=seed, **options)
                size = int((budget.bytes - probe.auxiliary_bytes) // FLOAT_BYTES)
            if size < 1 and memory is None:
                raise budget.too_small(probe.bytes, "one float of memory and the "
                                       "hash constants and signatures")
        if memory is not None:
            # the budget sized the signatures; the pool is its maker's
            return HashedMemoryEmbedding(input_dim, output_dim, memory=memory,
                                         hash=hash_kind, seed=seed, name=name,
                                         combiner=combiner, **options)
        return HashedMemoryEmbedding(input_dim, output_dim, size, hash=hash_kind,
                                     seed=seed, name=name, combiner=combiner,
                                     **options)

    return build


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


def smallest_md_params(input_dim, output_dim, num_blocks):
    """Parameters of the smallest mixed plan: every block at dim 1."""
    return input_dim + min(num_blocks, input_dim) * output_dim


def md_qr_plan(input_dim, output_dim, floats=None, counts=None, alpha=0.3,
               num_blocks=4, qr_min_rows=MD_QR_MIN_ROWS, budget=None):
    """A mixed-dim plan with QR blocks, as large as fits the budget (a
    `Budget`, or `floats` = bytes / 4; the id remap included). Without
    either: the plain MD plan's dims."""
    num_blocks = min(num_blocks, input_dim)
    if budget is None and floats is not None:
        budget = Budget("budget_bytes", floats * FLOAT_BYTES, floats * FLOAT_BYTES)

    def plan(params, shrink=1.0):
        def collisions(rows):
            return max(1, math.ceil(math.sqrt(rows) * shrink))

        with warnings.catch_warnings():
            # sizing in parameters is this search's own unit, not a user's
            warnings.simplefilter("ignore", DeprecationWarning)
            return plan_blocks(input_dim, output_dim, counts=counts,
                               num_blocks=num_blocks, alpha=alpha, budget=params,
                               qr_min_rows=qr_min_rows, qr_collisions=collisions)

    if budget is None:
        return plan(None)
    # QR shrinks the big blocks after sizing, so search the sizing budget
    # whose QR plan uses the byte budget best.
    target = budget.bytes
    low = float(smallest_md_params(input_dim, output_dim, num_blocks))
    high = float(input_dim * output_dim + num_blocks * output_dim ** 2)
    best = plan(low)
    if best.bytes > target:
        raise budget.too_small(best.bytes, "every block one column wide, the big "
                               "ones as QR pairs")
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
    size = int((budget_bytes - embeddings_aux_bytes) // FLOAT_BYTES)
    if size < 1:
        raise BudgetTooSmall("budget_bytes", budget_bytes,
                             embeddings_aux_bytes + FLOAT_BYTES,
                             "the hash constants and signatures and one float")
    return SharedMemory(size, name=name)


# ---- one table per feature -------------------------------------------------


def table_dims(cardinalities, dim, alpha=0.3, budget_params=None):
    """Per-table dims from DLRM's `md_solver`, at most `dim`: the largest
    table at `dim`, or all within `budget_params` table parameters."""
    if budget_params is not None:
        dims = md_solver(cardinalities, alpha, budget=budget_params)
    else:
        dims = md_solver(cardinalities, alpha, base_dim=dim)
    return [int(min(d, dim)) for d in dims]


def _fit_table_params(bytes_for, cardinalities, budget):
    """The largest `md_solver` parameter budget whose layers, every array
    counted by `bytes_for(params)`, fit `budget` (md_solver counts table
    parameters only and rounds dims)."""
    low, high = 0.0, budget.bytes / FLOAT_BYTES
    if bytes_for(high) <= budget.bytes:
        return high
    for _ in range(60):
        middle = (low + high) / 2
        if middle > 0 and bytes_for(middle) <= budget.bytes:
            low = middle
        else:
            high = middle
    if low <= 0:
        # md_solver's dims are at least 1: every table one column wide
        raise budget.too_small(bytes_for(1e-9), "every table one column wide")
    return low


def _table_features(cardinalities, dim, budget, counts, combiners, options,
                    names=None):
    alpha = options.get("alpha", 0.3)
    if options.get("budget_params") is not None:
        params = options["budget_params"]
    elif budget is not None:
        def bytes_for(params):
            dims = table_dims(cardinalities, dim, alpha, params)
            return FLOAT_BYTES * sum(r * d + (d * dim if d < dim else 0)
                                     for r, d in zip(cardinalities, dims))

        params = _fit_table_params(bytes_for, cardinalities, budget)
    else:
        params = None
    dims = table_dims(cardinalities, dim, alpha, params)
    names = names or [f"embedding_{f}" for f in range(len(cardinalities))]
    return [MixedDimEmbedding(rows, dim, plan=BlockPlan(rows, dim, [Block(0, rows, d)]),
                              combiner=combiners[f], name=names[f],
                              embeddings_regularizer=options.get("embeddings_regularizer"))
            for f, (rows, d) in enumerate(zip(cardinalities, dims))]


def _table_blocks_features(cardinalities, dim, budget, counts, combiners, options,
                           names=None):
    """DLRM's per-table dims, then frequency blocks inside each table of at
    least `block_min_rows` rows, the most popular block at the table's dim."""
    alpha = options.get("alpha", 0.3)
    num_blocks = options.get("num_blocks", 4)
    min_rows = options.get("block_min_rows", BLOCK_MIN_ROWS)
    names = names or [f"embedding_{f}" for f in range(len(cardinalities))]
    # the blocks' rows and masses depend on the counts only: plan them once
    shapes = []
    for f, rows in enumerate(cardinalities):
        if rows < min_rows:
            shapes.append(None)
            continue
        feature_counts = None if counts is None else np.asarray(counts[f])
        plan = plan_blocks(rows, dim, counts=feature_counts,
                           num_blocks=min(num_blocks, rows), alpha=alpha)
        shapes.append(([b.rows for b in plan.blocks], [b.mass for b in plan.blocks],
                       plan.remapped))

    def dims_of(table_dims_):
        out = []
        for shape, d in zip(shapes, table_dims_):
            out.append((d,) if shape is None else block_dims(
                shape[0], shape[1], alpha, dim, base_dim=d))
        return out

    def bytes_for(params):
        total = 0
        dims = dims_of(table_dims(cardinalities, dim, alpha, params))
        for rows, shape, block in zip(cardinalities, shapes, dims):
            block_rows = [rows] if shape is None else shape[0]
            total += sum(r * d + (d * dim if d != dim else 0)
                         for r, d in zip(block_rows, block))
            total += rows if shape is not None and shape[2] else 0
        return FLOAT_BYTES * total

    if options.get("budget_params") is not None:
        params = options["budget_params"]
    elif budget is not None:
        params = _fit_table_params(bytes_for, cardinalities, budget)
    else:
        params = None
    result = []
    for f, (rows, d) in enumerate(zip(cardinalities, table_dims(cardinalities, dim,
                                                                 alpha, params))):
        feature_counts = None if counts is None else np.asarray(counts[f])
        if shapes[f] is not None:
            plan = plan_blocks(rows, dim, counts=feature_counts,
                               num_blocks=min(num_blocks, rows), alpha=alpha,
                               base_dim=d)
        else:
            plan = BlockPlan(rows, dim, [Block(0, rows, d)])
            feature_counts = None
        result.append(MixedDimEmbedding(
            rows, dim, plan=plan, counts=feature_counts, combiner=combiners[f],
            embeddings_regularizer=options.get("embeddings_regularizer"),
            name=names[f]))
    return result


def _uniform_features(cardinalities, dim, budget, counts, combiners, options):
    return [_uniform(rows, dim, budget=None, combiner=combiners[f],
                     embeddings_regularizer=options.get("embeddings_regularizer"),
                     name=f"embedding_{f}")
            for f, rows in enumerate(cardinalities)]


def build_shares(kind, cardinalities, dim, budget, counts, combiners, options):
    """One layer of `kind` per feature, each sized to the share of `budget`
    its uniform table would have. A feature whose share is below its
    smallest plan gets that plan and the others share what is left; with
    `share_memory` (robe / lma) all read one `SharedMemory` of what the
    budget leaves after signatures and hash constants."""
    options = dict(options)
    share_memory = options.pop("share_memory", True) and kind.shared_memory
    signatures = options.pop("signatures", None)
    seed = options.pop("seed", 0)
    build_options = {k: v for k, v in options.items() if k in kind.options}
    if "embeddings_regularizer" in options and options["embeddings_regularizer"] is not None:
        build_options["embeddings_regularizer"] = options["embeddings_regularizer"]

    def build(f, share, memory=None):
        extra = {}
        if "seed" in kind.options:
            extra["seed"] = seed + f
        if "signatures" in kind.options:
            extra["signatures"] = None if signatures is None else signatures[f]
        if memory is not None:
            extra["memory"] = memory
        return kind.build(
            cardinalities[f], dim,
            budget=None if share is None else Budget("budget_bytes", share, share),
            counts=None if counts is None else np.asarray(counts[f]),
            combiner=combiners[f], name=f"embedding_{f}", **build_options, **extra)

    if budget is None:
        if kind.needs_budget:
            raise ValueError(f"Kind {kind.name!r} needs a budget: pass `budget_bytes` "
                             "or `budget_fraction`.")
        return [build(f, None) for f in range(len(cardinalities))]
    fixed = {}
    for _ in range(len(cardinalities) + 1):
        free = [f for f in range(len(cardinalities)) if f not in fixed]
        left = budget.bytes - sum(fixed.values())
        rows = float(sum(cardinalities[f] for f in free))
        if free and left <= 0:
            break
        layers, sizes, short = {}, dict(fixed), False
        for f in free:
            share = sizes[f] = left * cardinalities[f] / rows
            try:
                layers[f] = build(f, share)
            except BudgetTooSmall as error:
                fixed[f] = error.minimum
                short = True
        if not short:
            break
    else:
        short = True
    if short or sum(fixed.values()) > budget.bytes:
        minimum = sum(fixed.values()) + sum(
            _smallest_bytes(build, f) for f in range(len(cardinalities)) if f not in fixed)
        raise budget.too_small(minimum, f"the smallest {kind.name!r} layer of "
                               "every feature")
    for f, size in fixed.items():
        layers[f] = build(f, size)
    result = [layers[f] for f in range(len(cardinalities))]
    if share_memory:
        # the same layers, reading one pool of what the budget leaves
        auxiliary = sum(layer.auxiliary_bytes for layer in result)
        try:
            memory = make_shared_memory(budget.bytes, auxiliary)
        except BudgetTooSmall:
            raise budget.too_small(auxiliary + FLOAT_BYTES, "the hash constants and "
                                   "signatures of every feature and one float") from None
        # each sized as before (LMA's signature rows), reading the pool
        result = [build(f, sizes[f], memory=memory) for f in range(len(cardinalities))]
    return result


def _smallest_bytes(build, f):
    """The smallest budget feature `f`'s builder accepts (its error says)."""
    try:
        build(f, 1.0)
    except BudgetTooSmall as error:
        return error.minimum
    return 1.0


def _mixed_from_embedding(layer, counts, budget_bytes, options):
    new_layer, report = MixedDimEmbedding.from_embedding(
        layer, counts, budget_bytes=budget_bytes, return_report=True, **options)
    return new_layer, report.bytes_after, report


_BUILT_IN_KINDS = (
    EmbeddingKind(
        "uniform", "keras.layers.Embedding: the full float32 table (the "
        "reference); with a combiner, the same table as a one-block "
        "MixedDimEmbedding", _uniform, (),
        build_features=_uniform_features),
    EmbeddingKind(
        "mixed", "MixedDimEmbedding: frequency blocks inside the table, "
        "narrower for rarer ids (arXiv:1909.11810)", _mixed,
        ("alpha", "num_blocks", "budget_params"), convert=_mixed_from_embedding),
    EmbeddingKind(
        "table", "one block narrower than output_dim plus a projection: DLRM's "
        "per-table mixed dims (md_solver across the features of a model)", _table,
        (), build_features=_table_features),
    EmbeddingKind(
        "table_blocks", "DLRM's per-table dims, then frequency blocks inside "
        "each table of at least block_min_rows rows", _table_blocks,
        ("alpha", "num_blocks", "block_min_rows"),
        build_features=_table_blocks_features),
    EmbeddingKind(
        "qr", "QREmbedding (mult) with the fewest collisions that fit", _qr, (),
        needs_budget=True),
    EmbeddingKind(
        "md_qr", "mixed blocks, those above qr_min_rows rows as QR pairs",
        _md_qr, ("alpha", "num_blocks", "qr_min_rows"), needs_budget=True),
    EmbeddingKind(
        "hashing", "HashingEmbedding: id mod buckets", _hashing, (),
        needs_budget=True),
    EmbeddingKind(
        "robe", "HashedMemoryEmbedding(hash='robe'): rows read from one hashed "
        "memory", _hashed_memory("robe"), ("memory", "seed"), needs_budget=True,
        shared_memory=True),
    EmbeddingKind(
        "lma", "HashedMemoryEmbedding(hash='lsh'): locality-sensitive hashing "
        "of minhash signatures into one memory", _hashed_memory("lsh"),
        ("memory", "seed", "signatures", "signature_size", "hashes_per_element"),
        needs_budget=True, shared_memory=True),
)
for _kind in _BUILT_IN_KINDS:
    register_kind(_kind)
_BUILT_IN = tuple(kind.name for kind in _BUILT_IN_KINDS)

# The built-in kinds' names (the examples' `--embedding` choices).
EMBEDDING_KINDS = _BUILT_IN


__all__ = [
    "EMBEDDING_KINDS",
    "EmbeddingKind",
    "get_kind",
    "kind_names",
    "register_kind",
    "unregister_kind",
]
