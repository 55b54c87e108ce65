"""Re-planning a MixedDimEmbedding: new block sizes and dims from new counts.

Each new block is warm-started from the principal directions of the old
outputs of its ids: with `Y` the old outputs (rows x output_dim) and `V` the
top `dim` right singular vectors of `Y`, the block's projection is `V^T` and
its table `Y V`, the best rank-`dim` approximation of `Y`. For blocks of many
rows the directions come from the fixed-dimension subspace embedding of
Magdon-Ismail and Gittens (arXiv:1909.12580; `keras_mixed_dim.sketch`): an
OSNAP sketch `S Y` and its QR factor `R` (output_dim x output_dim), with
`||R x|| = ||S Y x||`, so the small eigenproblem of `R^T R` replaces the
`rows x output_dim` one.

What the sketch gives is measured, not assumed: the pass that writes the
table also accumulates `Y^T Y`, which yields the exact rank-`dim` optimum,
and a block whose sketched error exceeds 1.05x that optimum is redone with
exact directions (`ReplanReport.fallback_blocks`). With the default sketch
(OSNAP, 4 nonzeros per column, 8 x output_dim rows)
`benchmarks/bench_sketch.py` measures at most about 1.04x on its data, so the
fallback is rare. Old outputs are produced and consumed in chunks, never all
at once.
"""

import dataclasses

import numpy as np

from keras_mixed_dim.budgets import COUNT_BYTES
from keras_mixed_dim.frequency.rerank import LayerSnapshot
from keras_mixed_dim.frequency.rerank import new_ranking
from keras_mixed_dim.frequency.rerank import read_counts
from keras_mixed_dim.planning import plan_blocks
from keras_mixed_dim.sketch import CHUNK_ROWS
from keras_mixed_dim.sketch import MAX_ERROR_RATIO
from keras_mixed_dim.sketch import low_rank
from keras_mixed_dim.sketch import pca


@dataclasses.dataclass
class ReplanReport:
    """What one re-planning did.

    Attributes:
        old_plan: The plan before.
        new_plan: The plan after.
        warm_start_error: ||Y_new - Y_old||_F / ||Y_old||_F over all ids.
        sketched_blocks: Indices of new blocks whose directions were sketched.
        rebuilt: False when the new plan had the old shapes and nothing was
            done (re-ranking is then enough).
        error_ratios: Per new block, its warm-start error over the exact
            rank-`dim` optimum (1.0 for exact and full-width blocks).
        fallback_blocks: Sketched blocks whose error exceeded
            `max_error_ratio` and were redone with exact directions.
    """

    old_plan: object
    new_plan: object
    warm_start_error: float
    sketched_blocks: tuple
    rebuilt: bool = True
    error_ratios: tuple = ()
    fallback_blocks: tuple = ()


def principal_directions(rows_fn, num_rows, width, k, sketch_rows=None, seed=0,
                         sketch="osnap"):
    """Top `k` right singular vectors (width x k) of the streamed `Y`.

    Exact (`Y^T Y`, accumulated in chunks) unless `sketch_rows` is given, in
    which case they come from the fixed-dimension embedding `R` of a
    `sketch` of `Y` (see `keras_mixed_dim.sketch.principal_directions`).
    """
    del width  # read from the rows
    return pca.principal_directions(
        rows_fn, k, num_rows=num_rows,
        sketch=None if sketch_rows is None else sketch,
        sketch_rows=sketch_rows, seed=seed,
    )


def replan_layer(layer, counts=None, sketch_threshold=200_000, sketch_rows=None,
                 seed=0, skip_if_unchanged=False, sketch="osnap",
                 max_error_ratio=MAX_ERROR_RATIO):
    """Re-plans `layer` from counts and rebuilds its variables in place.

    Block sizes and dims are recomputed with the planner from the counts
    (same number of blocks, alpha and budget as the layer was made with);
    ids are re-ranked; each new block is warm-started from the principal
    directions of its ids' old outputs (sketched for blocks of more than
    `sketch_threshold` rows). `frequency_counts` is kept. The model holding
    the layer must be recompiled afterwards (`FrequencyRecount(replan=True)`
    does it), since the variables changed shape.

    Args:
        layer: A built, counting `MixedDimEmbedding`.
        counts: Optional per-id counts (default: the layer's own).
        sketch_threshold: Blocks with more rows are sketched.
        sketch_rows: Rows of the sketch (default
            `keras_mixed_dim.sketch.default_sketch_rows`: 8 x output_dim for
            OSNAP, at least 64).
        sketch: Sketch kind: `"osnap"` (default), `"gaussian"` or
            `"countsketch"`.
        max_error_ratio: A sketched block whose warm-start error exceeds this
            many times the exact optimum is redone exactly (None: never).
        skip_if_unchanged: Do nothing (report `rebuilt=False`) when the new
            plan has the same block rows and dims as the old one.

    Returns:
        A `ReplanReport`.
    """
    if layer.plan.has_qr_blocks:
        raise ValueError(
            f"Layer {layer.name!r} has quotient-remainder (storage='qr') blocks; "
            "re-ranking and re-planning move rows between blocks, which a QR "
            "pair cannot hold row by row. Plan without `qr_min_rows` to re-rank."
        )
    counts = read_counts(layer) if counts is None else np.asarray(counts, np.float64)
    report, new_ranks, new_tables, new_projections = replan_arrays(
        LayerSnapshot(layer), counts, layer.planning_args, layer.name,
        sketch_threshold=sketch_threshold, sketch_rows=sketch_rows, seed=seed,
        skip_if_unchanged=skip_if_unchanged, sketch=sketch,
        max_error_ratio=max_error_ratio,
        held_bytes=COUNT_BYTES * layer.input_dim if layer.count_frequencies else 0)
    if not report.rebuilt:
        return report
    layer.rebuild(report.new_plan, new_ranks)
    for variable, value in zip(layer.block_embeddings, new_tables):
        variable.assign(value)
    for variable, value in zip(layer.block_projections, new_projections):
        if variable is not None:
            variable.assign(value)
    return report


def replan_arrays(old, counts, planning_args, name, sketch_threshold=200_000,
                  sketch_rows=None, seed=0, skip_if_unchanged=False, sketch="osnap",
                  max_error_ratio=MAX_ERROR_RATIO, held_bytes=0):
    """The re-planning of one table's weights, on numpy arrays.

    Args:
        old: A `LayerSnapshot` of the weights.
        counts: Per-id counts (float64).
        planning_args: `{"num_blocks", "alpha", "budget_bytes", "round_dims"}`.
        name: The layer's (or feature's) name, for errors.
        held_bytes: Bytes of the budget held besides the plan (the
            frequency counts).
        Others: as `replan_layer`'s.

    Returns:
        `(report, new_ranks, new_tables, new_projections)`; all but the
        report are None when the report says `rebuilt=False`.
    """
    if counts.sum() <= 0:
        raise ValueError(f"Layer {name!r} has no counts yet; nothing to plan from.")
    old_plan = old.plan
    args = planning_args
    new_plan = plan_blocks(
        old_plan.input_dim, old_plan.output_dim, counts=counts,
        num_blocks=min(args["num_blocks"], old_plan.input_dim), alpha=args["alpha"],
        budget_bytes=args["budget_bytes"], round_dims=args["round_dims"], remap=True,
        held_bytes=held_bytes if args["budget_bytes"] is not None else 0,
    )
    if skip_if_unchanged and (new_plan.rows, new_plan.dims) == (
        old_plan.rows, old_plan.dims
    ):
        return ReplanReport(old_plan, new_plan, 0.0, (), rebuilt=False), None, None, None
    order, new_ranks = new_ranking(old.ranks, counts)
    new_tables, new_projections, sketched, fallback, ratios = [], [], [], [], []
    error_num = error_den = 0.0
    for b, block in enumerate(new_plan.blocks):
        ids = order[block.start : block.stop]

        def rows_fn(start, stop, ids=ids):
            return old.outputs(ids[start:stop])

        if block.dim == new_plan.output_dim:
            # a full-width block keeps its ids' outputs exactly
            table = np.concatenate([
                rows_fn(start, min(start + CHUNK_ROWS, ids.size))
                for start in range(0, ids.size, CHUNK_ROWS)
            ])
            new_tables.append(table.astype("float32"))
            new_projections.append(None)
            error_den += float(np.sum(table**2))
            ratios.append(1.0)
            continue
        use_sketch = ids.size > sketch_threshold
        if use_sketch:
            sketched.append(b)
        result = low_rank(
            rows_fn, block.dim, num_rows=ids.size,
            sketch=sketch if use_sketch else None, sketch_rows=sketch_rows,
            seed=seed + b, max_error_ratio=max_error_ratio,
        )
        if result.fell_back:
            fallback.append(b)
        error_num += result.squared_error
        error_den += result.squared_norm
        ratios.append(result.error_ratio)
        new_tables.append(result.table)
        new_projections.append(result.directions.T.astype("float32"))

    report = ReplanReport(
        old_plan=old_plan,
        new_plan=new_plan,
        warm_start_error=float(np.sqrt(error_num / error_den)) if error_den else 0.0,
        sketched_blocks=tuple(sketched),
        error_ratios=tuple(ratios),
        fallback_blocks=tuple(fallback),
    )
    return report, new_ranks.astype("int32"), new_tables, new_projections
