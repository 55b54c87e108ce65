"""Re-planning a MixedDimEmbedding: new block sizes and dims from new counts.

Each new block is warm-started from the principal directions of the old
outputs of its ids: with `Y` the old outputs (rows x output_dim) and `V` the
top `dim` right singular vectors of `Y`, the block's projection is `V^T` and
its table `Y V`, the best rank-`dim` approximation of `Y`. For blocks of many
rows the directions come from a sketch instead of `Y^T Y`: a CountSketch `S`
(an oblivious L2 subspace embedding) gives `S Y` with a fixed number of rows,
and its QR factor `R` (output_dim x output_dim) satisfies `||R x|| = ||S Y
x||` (Magdon-Ismail and Gittens, arXiv:1909.12580), so the small
eigenproblem of `R^T R` replaces the `rows x output_dim` one. Old outputs are
produced and consumed in chunks, never all at once.
"""

import dataclasses

import numpy as np

from keras_mixed_dim.frequency.rerank import LayerSnapshot
from keras_mixed_dim.frequency.rerank import new_ranking
from keras_mixed_dim.frequency.rerank import read_counts
from keras_mixed_dim.planning import plan_blocks

CHUNK_ROWS = 1 << 16


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
    """

    old_plan: object
    new_plan: object
    warm_start_error: float
    sketched_blocks: tuple
    rebuilt: bool = True


def count_sketch(rows_fn, num_rows, width, sketch_rows, seed=0):
    """`S Y` for a CountSketch `S` (sketch_rows x num_rows), streaming `Y`.

    Args:
        rows_fn: `rows_fn(start, stop)` returns rows `[start, stop)` of `Y`.
        num_rows: Rows of `Y`.
        width: Columns of `Y`.
        sketch_rows: Rows of the sketch.
    """
    rng = np.random.default_rng(seed)
    sketch = np.zeros((sketch_rows, width), dtype=np.float64)
    for start in range(0, num_rows, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, num_rows)
        buckets = rng.integers(0, sketch_rows, size=stop - start)
        signs = rng.choice([-1.0, 1.0], size=stop - start)
        np.add.at(sketch, buckets, signs[:, None] * rows_fn(start, stop))
    return sketch


def principal_directions(rows_fn, num_rows, width, k, sketch_rows=None, seed=0):
    """Top `k` right singular vectors (width x k) of the streamed `Y`.

    Exact (`Y^T Y`, accumulated in chunks) unless `sketch_rows` is given, in
    which case they come from the R factor of a CountSketch of `Y`.
    """
    if sketch_rows is None:
        gram = np.zeros((width, width), dtype=np.float64)
        for start in range(0, num_rows, CHUNK_ROWS):
            chunk = rows_fn(start, min(start + CHUNK_ROWS, num_rows))
            gram += chunk.T @ chunk
    else:
        sketch = count_sketch(rows_fn, num_rows, width, sketch_rows, seed)
        r = np.linalg.qr(sketch, mode="r")
        gram = r.T @ r  # ||R x||^2 = ||S Y x||^2 = x^T (Y^T S^T S Y) x
    values, vectors = np.linalg.eigh(gram)
    return vectors[:, np.argsort(values)[::-1][:k]]


def replan_layer(layer, counts=None, sketch_threshold=200_000, sketch_rows=None,
                 seed=0, skip_if_unchanged=False):
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
        sketch_rows: Rows of the CountSketch (default 8 x output_dim, at
            least 64).
        skip_if_unchanged: Do nothing (report `rebuilt=False`) when the new
            plan has the same block rows and dims as the old one.

    Returns:
        A `ReplanReport`.
    """
    old_plan = layer.plan
    if layer.plan.has_qr_blocks:
        raise ValueError(
            f"Layer {layer.name!r} has quotient-remainder (storage='qr') blocks; "
            "re-ranking and re-planning move rows between blocks, which a QR "
            "pair cannot hold row by row. Plan without `qr_min_rows` to re-rank."
        )
    counts = read_counts(layer) if counts is None else np.asarray(counts, np.float64)
    if counts.sum() <= 0:
        raise ValueError(f"Layer {layer.name!r} has no counts yet; nothing to plan from.")
    args = layer.planning_args
    new_plan = plan_blocks(
        old_plan.input_dim, old_plan.output_dim, counts=counts,
        num_blocks=min(args["num_blocks"], old_plan.input_dim), alpha=args["alpha"],
        budget=args["budget"], round_dims=args["round_dims"], remap=True,
    )
    if skip_if_unchanged and (new_plan.rows, new_plan.dims) == (
        old_plan.rows, old_plan.dims
    ):
        return ReplanReport(old_plan, new_plan, 0.0, (), rebuilt=False)
    old = LayerSnapshot(layer)
    order, new_ranks = new_ranking(old.ranks, counts)
    sketch_rows = sketch_rows or max(64, 8 * old_plan.output_dim)
    new_tables, new_projections, sketched = [], [], []
    error_num = error_den = 0.0
    for b, block in enumerate(new_plan.blocks):
        ids = order[block.start : block.stop]

        def rows_fn(start, stop, ids=ids):
            return old.outputs(ids[start:stop])

        if block.dim == new_plan.output_dim:
            # a full-width block keeps its ids' outputs exactly
            new_tables.append(old.outputs(ids).astype("float32"))
            new_projections.append(None)
            continue
        use_sketch = ids.size > sketch_threshold
        if use_sketch:
            sketched.append(b)
        directions = principal_directions(
            rows_fn, ids.size, new_plan.output_dim, block.dim,
            sketch_rows if use_sketch else None, seed + b,
        )
        table = np.empty((ids.size, block.dim), dtype=np.float64)
        for start in range(0, ids.size, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, ids.size)
            y = rows_fn(start, stop)
            table[start:stop] = y @ directions
            error_num += float(np.sum((table[start:stop] @ directions.T - y) ** 2))
            error_den += float(np.sum(y**2))
        new_tables.append(table.astype("float32"))
        new_projections.append(directions.T.astype("float32"))
    for b, block in enumerate(new_plan.blocks):
        if block.dim == new_plan.output_dim:
            error_den += float(np.sum(new_tables[b].astype(np.float64) ** 2))

    layer.rebuild(new_plan, new_ranks.astype("int32"))
    for variable, value in zip(layer.block_embeddings, new_tables):
        variable.assign(value)
    for variable, value in zip(layer.block_projections, new_projections):
        if variable is not None:
            variable.assign(value)
    return ReplanReport(
        old_plan=old_plan,
        new_plan=new_plan,
        warm_start_error=float(np.sqrt(error_num / error_den)) if error_den else 0.0,
        sketched_blocks=tuple(sketched),
    )
