"""Uniform -> mixed-dimension conversion of a trained embedding table.

The ids of a trained `keras.layers.Embedding` (weights `W`, `n x d`) are
ranked by their counts and cut into blocks with the planner. A block of
`dim_k < d` gets the principal directions of its rows: with `Y` its rows of
`W` and `V_k` the top `dim_k` right singular vectors of `Y`, the block table
is `Y V_k` and the projection `V_k^T`, the best rank-`dim_k` approximation of
`Y`. Rows are streamed in chunks and only `d x d` matrices are decomposed: each
block's exact Gram matrix `Y^T Y` by default, or, with `sketch=...`, for
blocks of more than `sketch_threshold` rows, the fixed-dimension subspace
embedding of a sketch (`keras_mixed_dim.sketch`), whose error is measured in
the pass that writes the table and gated against the exact optimum.

Numpy only: `MixedDimEmbedding.from_embedding` (and
`keras_mixed_dim.compress.mixed_dim_from_embedding`) build the layer from
what `convert_weights` returns.
"""

import dataclasses

import numpy as np

from keras_mixed_dim.budgets import check_budget_bytes
from keras_mixed_dim.budgets import check_budget_fraction
from keras_mixed_dim.budgets import check_legacy_budget
from keras_mixed_dim.budgets import uniform_bytes
from keras_mixed_dim.budgets import warn_budget_deprecated
from keras_mixed_dim.budgets import refuse_budget_with_new
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan
from keras_mixed_dim.planning import block_dims
from keras_mixed_dim.planning import equal_mass_boundaries
from keras_mixed_dim.planning import plan_blocks
from keras_mixed_dim.planning import rank_ids
from keras_mixed_dim.planning.blocks import check_counts
from keras_mixed_dim.planning.plan import FLOAT_BYTES
from keras_mixed_dim.planning.plan import REMAP_BYTES
from keras_mixed_dim.sketch import KINDS
from keras_mixed_dim.sketch import MAX_ERROR_RATIO
from keras_mixed_dim.sketch import default_sketch_rows
from keras_mixed_dim.sketch import gram
from keras_mixed_dim.sketch import low_rank
from keras_mixed_dim.sketch import subspace_embedding

SKETCH_THRESHOLD = 1_000_000
AUTO_ALPHAS = tuple(np.round(np.arange(0.0, 1.01, 0.1), 2))


@dataclasses.dataclass
class BlockReport:
    """How one block of a converted table approximates the original rows.

    Attributes:
        rows: Ids in the block.
        dim: Width of its table.
        mass: Fraction of the counts that fall in the block.
        relative_error: `||Y - Y V V^T||_F / ||Y||_F` over its rows (0 for a
            full-width block, which keeps its rows exactly).
        error_ratio: The error over the exact rank-`dim` optimum (1.0 when
            exact).
        sketched: Whether its directions came from a sketch.
        fell_back: Whether the sketched directions missed the gate and the
            exact ones were used.

    Example:

    >>> converted = convert_weights(table, counts, budget_fraction=0.25)  # doctest: +SKIP
    >>> [b.relative_error for b in converted.report.blocks]   # doctest: +SKIP
    """

    rows: int
    dim: int
    mass: float
    relative_error: float
    error_ratio: float = 1.0
    sketched: bool = False
    fell_back: bool = False


@dataclasses.dataclass
class ConversionReport:
    """What `convert_weights` did to one table.

    Attributes:
        plan: The `BlockPlan` of the new layer.
        alpha: The power-rule temperature used (chosen when "auto").
        blocks: One `BlockReport` per block.
        bytes_before: float32 bytes of the original table.
        bytes_after: Bytes of the new layer's weights (tables, projections,
            id -> rank table).
        relative_error: `||W' - W||_F / ||W||_F` over all ids.
        weighted_error: The same weighted by the counts: the relative error
            of an average lookup.

    Example:

    >>> converted = convert_weights(table, counts, budget_fraction=0.25)  # doctest: +SKIP
    >>> converted.report.bytes_after / converted.report.bytes_before  # doctest: +SKIP
    """

    plan: object
    alpha: float
    blocks: list
    bytes_before: int
    bytes_after: int
    relative_error: float
    weighted_error: float


@dataclasses.dataclass
class ConvertedWeights:
    """`plan`, the per-block `tables` and `projections` (None for full-width
    blocks), the id `order` (`order[rank] = id`) and the `report`."""

    plan: object
    tables: list
    projections: list
    order: np.ndarray
    report: ConversionReport


def budget_to_params(budget, input_dim, output_dim, remapped, name="budget"):
    """Table-plus-projection parameters allowed by a `budget`.

    `budget` below 1 is a fraction of the original float32 table's bytes; 1
    or more is a number of bytes. The id -> rank table (4 bytes per id, when
    the counts are not already in rank order) is paid out of it. `name` is
    the argument the budget came in, for errors.
    """
    if budget is None:
        return None
    budget = check_legacy_budget(budget)
    original = input_dim * output_dim * FLOAT_BYTES
    total = budget * original if budget < 1 else float(budget)
    return _params_of(total, name, budget, input_dim, remapped)


def _params_of(total, name, value, input_dim, remapped):
    remap = input_dim * REMAP_BYTES if remapped else 0
    params = (total - remap) / FLOAT_BYTES
    if params < input_dim:
        raise ValueError(
            f"`{name}`={value!r} allows {int(total):,} bytes, which is less than "
            f"the smallest plan for {input_dim:,} ids: one float per id"
            + (f" plus the {remap:,}-byte id -> rank table" if remap else "")
            + f" needs {input_dim * FLOAT_BYTES + remap:,} bytes."
        )
    return params


def _conversion_budget(where, budget, budget_bytes, budget_fraction):
    """`(name, value, kind)` of the budget given to `where`: kind `"legacy"`
    (the deprecated fraction-or-bytes `budget`), `"bytes"`, `"fraction"`,
    or None without a budget."""
    if budget is not None:
        warn_budget_deprecated(
            where, "a fraction < 1 of the original float32 bytes or a number of "
            "bytes >= 1", "budget_fraction or budget_bytes", stacklevel=4)
        refuse_budget_with_new(budget, budget_bytes, budget_fraction)
        return ("budget", budget, "legacy")
    if budget_bytes is not None and budget_fraction is not None:
        raise ValueError(
            "Pass at most one of `budget_bytes` and `budget_fraction`. Received: "
            f"budget_bytes={budget_bytes!r}, budget_fraction={budget_fraction!r}")
    if budget_bytes is not None:
        return ("budget_bytes", check_budget_bytes(budget_bytes), "bytes")
    if budget_fraction is not None:
        return ("budget_fraction", check_budget_fraction(budget_fraction), "fraction")
    return None


def _params_for(spec, input_dim, output_dim, remapped):
    if spec is None:
        return None
    name, value, kind = spec
    if kind == "legacy":
        return budget_to_params(value, input_dim, output_dim, remapped)
    total = value if kind == "bytes" else value * uniform_bytes(input_dim, output_dim)
    return _params_of(total, name, value, input_dim, remapped)


def convert_weights(weights, counts, alpha="auto", num_blocks=4, budget=None,
                    sketch=None, sketch_threshold=SKETCH_THRESHOLD,
                    sketch_rows=None, round_dims=False, seed=0,
                    max_error_ratio=MAX_ERROR_RATIO, progress=None,
                    keep_id_order=False, budget_bytes=None, budget_fraction=None,
                    _budget_spec=None):
    """Plans blocks from counts and fits each to a trained table (numpy).

    Args:
        weights: The trained `n x d` table.
        counts: Per-id counts (`n` values >= 0, not all zero).
        alpha: Power-rule temperature, or `"auto"`: with a `budget`, the value
            of `AUTO_ALPHAS` whose plan has the smallest count-weighted
            reconstruction error (computed from each block's spectrum, so it
            costs no extra pass); without one, 0.3.
        num_blocks: Equal-mass blocks (at most `n`).
        budget: Deprecated: a fraction `< 1` of the original bytes, or a
            number of bytes.
        sketch: Sketch kind for blocks of more than `sketch_threshold` rows,
            or None (default) to take every block's exact Gram matrix. Both
            stream the rows in chunks and need only `d x d` matrices; on a
            CPU the exact Gram (one BLAS matmul per chunk) measured faster
            than an OSNAP sketch (`benchmarks/bench_compress.py`).
        sketch_threshold: Blocks with more rows are sketched.
        sketch_rows: Rows of the sketch (default
            `keras_mixed_dim.sketch.default_sketch_rows`).
        round_dims: Round dims to powers of two.
        seed: Seed of the sketches.
        max_error_ratio: Gate on sketched directions (see
            `keras_mixed_dim.sketch.low_rank`).
        progress: Optional callable `progress(rows_done)` for progress bars.
        keep_id_order: Cut blocks in id order instead of count order, with
            no id -> rank table (its 4 bytes per id stay in the budget). For
            vocabularies already ranked by frequency (id 0 most frequent)
            whose counts from a later data pass are not exactly sorted.
        budget_bytes: Bytes of the new layer's arrays: tables, projections
            and the id -> rank table (default: no budget, the most popular
            block keeps `d`).
        budget_fraction: Alternative to `budget_bytes`: a fraction in
            (0, 1] of the original float32 table's bytes.

    Returns:
        A `ConvertedWeights`.

    Example:

    >>> table = np.random.default_rng(0).normal(size=(1000, 32)).astype("float32")
    >>> counts = np.random.default_rng(0).zipf(1.3, 1000)
    >>> converted = convert_weights(table, counts, alpha=0.3, budget_fraction=0.25)
    >>> converted.report.bytes_after <= 0.25 * converted.report.bytes_before
    True
    """
    spec = _budget_spec or _conversion_budget("convert_weights", budget,
                                              budget_bytes, budget_fraction)
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.size == 0:
        raise ValueError(
            f"The embedding weights must be a non-empty 2-D array. Received "
            f"shape {weights.shape}."
        )
    if not np.issubdtype(weights.dtype, np.floating):
        raise ValueError(
            f"The embedding weights must be floating point. Received dtype "
            f"{weights.dtype}."
        )
    if not np.all(np.isfinite(weights)):
        row = int(np.flatnonzero(~np.all(np.isfinite(weights), axis=1))[0])
        raise ValueError(f"The embedding weights hold NaN or inf (row {row}).")
    input_dim, output_dim = weights.shape
    counts = check_counts(counts, input_dim)
    if sketch is not None and sketch not in KINDS:
        raise ValueError(f"`sketch` must be None or one of {KINDS}. Received: {sketch!r}")
    num_blocks = min(int(num_blocks), input_dim) if not isinstance(
        num_blocks, bool) and float(num_blocks).is_integer() else num_blocks
    order = np.arange(input_dim) if keep_id_order else rank_ids(counts)
    remapped = not keep_id_order and not bool(np.all(order == np.arange(input_dim)))
    params = _params_for(spec, input_dim, output_dim, remapped)
    given = None if spec is None else f"`{spec[0]}`={spec[1]!r}"
    # Planning from the counts in rank order gives the same blocks without
    # ranking `input_dim` ids again for every alpha tried.
    sorted_counts = counts[order]

    def plan_for(a):
        try:
            if keep_id_order:
                return _plan_in_id_order(counts, output_dim, num_blocks, a, params,
                                         round_dims)
            plan = plan_blocks(input_dim, output_dim, counts=sorted_counts,
                               num_blocks=num_blocks, alpha=a,
                               budget_bytes=_params_bytes(params),
                               round_dims=round_dims, remap=False)
            return dataclasses.replace(plan, remapped=remapped)
        except ValueError as error:
            if params is None or "smallest possible plan" not in str(error):
                raise
            raise ValueError(
                f"{given} leaves {int(params):,} parameters for "
                f"tables and projections, below the smallest plan of "
                f"{num_blocks} blocks for a {input_dim:,} x {output_dim} table "
                f"({error}). Raise the budget or lower `num_blocks`."
            ) from None

    # Block boundaries depend on the counts only, not on alpha: take each
    # block's Gram matrix (exact or sketched) once, then size and fit.
    first = plan_for(0.3 if alpha == "auto" else alpha)
    grams, sketched = [], []
    for b, block in enumerate(first.blocks):
        rows_fn = _rows_of(weights, order, block.start, block.stop)
        use_sketch = sketch is not None and block.rows > sketch_threshold
        if use_sketch:
            r = subspace_embedding(
                rows_fn, num_rows=block.rows, kind=sketch, seed=seed + b,
                sketch_rows=sketch_rows or default_sketch_rows(sketch, output_dim),
            )
            grams.append(r.T @ r)
        else:
            grams.append(gram(rows_fn, num_rows=block.rows))
        sketched.append(use_sketch)
    if alpha == "auto":
        if params is None:
            chosen, plan = 0.3, plan_for(0.3)
        else:
            spectra = [np.sort(np.clip(np.linalg.eigvalsh(g), 0, None))[::-1]
                       for g in grams]
            best = None
            for a in AUTO_ALPHAS:
                candidate = plan_for(float(a))
                expected = sum(
                    (block.mass / block.rows) * spectrum[block.dim:].sum()
                    for block, spectrum in zip(candidate.blocks, spectra)
                )
                if best is None or expected < best[0] - 1e-12 * abs(best[0]):
                    best = (expected, float(a), candidate)
            _, chosen, plan = best
    else:
        chosen, plan = float(alpha), first
    tables, projections, reports = [], [], []
    error_num = error_den = weighted_num = weighted_den = 0.0
    done = 0
    for b, block in enumerate(plan.blocks):
        rows_fn = _rows_of(weights, order, block.start, block.stop)
        block_counts = counts[order[block.start:block.stop]]
        if block.dim == output_dim:
            table = np.asarray(weights[order[block.start:block.stop]], np.float32)
            tables.append(table)
            projections.append(None)
            norm = float(np.sum(table.astype(np.float64) ** 2))
            error_den += norm
            weighted_den += float(np.sum(block_counts * np.sum(
                table.astype(np.float64) ** 2, axis=1)))
            reports.append(BlockReport(block.rows, block.dim, block.mass or 0.0, 0.0))
        else:
            result = low_rank(
                rows_fn, block.dim, num_rows=block.rows,
                sketch=sketch if sketched[b] else None,
                gram_estimate=grams[b], max_error_ratio=max_error_ratio,
                row_weights=block_counts,
            )
            tables.append(result.table)
            projections.append(result.directions.T.astype(np.float32))
            error_num += result.squared_error
            error_den += result.squared_norm
            weighted_num += result.weighted_squared_error
            weighted_den += result.weighted_squared_norm
            reports.append(BlockReport(
                block.rows, block.dim, block.mass or 0.0, result.relative_error,
                result.error_ratio, result.sketched, result.fell_back,
            ))
        done += block.rows
        if progress is not None:
            progress(done)
    report = ConversionReport(
        plan=plan,
        alpha=chosen,
        blocks=reports,
        bytes_before=input_dim * output_dim * FLOAT_BYTES,
        bytes_after=int(plan.bytes),
        relative_error=float(np.sqrt(error_num / error_den)) if error_den else 0.0,
        weighted_error=(float(np.sqrt(weighted_num / weighted_den))
                        if weighted_den else 0.0),
    )
    return ConvertedWeights(plan, tables, projections, order, report)


def _params_bytes(params):
    # the remap is paid already (`budget_to_params`): plan without one
    return None if params is None else FLOAT_BYTES * params


def _plan_in_id_order(counts, output_dim, num_blocks, alpha, params, round_dims):
    """Equal-mass blocks of contiguous ids (no ranking), sized by the power rule."""
    offsets = np.asarray(equal_mass_boundaries(counts, num_blocks))
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    masses = (cumulative[offsets[1:]] - cumulative[offsets[:-1]]) / cumulative[-1]
    rows = offsets[1:] - offsets[:-1]
    # a block of ids never seen still needs a positive popularity to size
    dims = block_dims(rows, np.maximum(masses, 1e-300), alpha, output_dim,
                      budget_bytes=_params_bytes(params), round_dims=round_dims)
    blocks = tuple(Block(int(a), int(b), d, float(m)) for a, b, d, m
                   in zip(offsets[:-1], offsets[1:], dims, masses))
    return BlockPlan(counts.size, output_dim, blocks, remapped=False)


def _rows_of(weights, order, start, stop):
    def rows_fn(begin, end):
        return weights[order[start + begin:start + min(end, stop - start)]]
    return rows_fn
