"""Re-ranking a MixedDimEmbedding from its counts, keeping every shape.

Ids are re-sorted by count (ties by their current rank, so equal counts do
not churn); the top `rows_0` go to block 0, the next `rows_1` to block 1,
and so on. An id that stays in its block keeps its row bit for bit (the row
may move within the table). An id that changes block is warm-started by least
squares: its new row is its old output times the pseudo-inverse of the new
block's projection (exactly its old output when the new block has no
projection). Optimizer slots (Adam's moments, row-wise Adagrad's per-row
accumulators, FTRL's slots) follow the rows of ids that stay and are reset
to their initial value for ids that move, since state of another block's
coordinates means nothing in the new one.
"""

import dataclasses

import numpy as np
from keras import ops

from keras_mixed_dim.layers.slots import slot_initial_value
from keras_mixed_dim.layers.slots import slot_variables
from keras_mixed_dim.planning import ranks_of_ids


@dataclasses.dataclass
class RerankReport:
    """What one re-ranking did.

    Attributes:
        ids_moved: Ids whose block changed.
        mass_before: Per block, the share of counted lookups its ids held
            under the old ranking.
        mass_after: The same under the new ranking.
        warm_start_error: Relative output error of the moved ids,
            ||new - old||_F / ||old||_F (0 when none moved).

    Example:

    >>> report = rerank_layer(layer, counts)                # doctest: +SKIP
    >>> report.ids_moved, report.mass_after                 # doctest: +SKIP
    """

    ids_moved: int
    mass_before: tuple
    mass_after: tuple
    warm_start_error: float


def read_counts(layer):
    """The layer's counts as float64 (summed over replicas when distributed)."""
    if getattr(layer, "frequency_counts", None) is None:
        raise ValueError(
            f"Layer {layer.name!r} does not count frequencies: build it with "
            "count_frequencies=True."
        )
    return np.asarray(ops.convert_to_numpy(layer.frequency_counts), dtype=np.float64)


def block_masses(plan, ranks, counts):
    """Share of `counts` held by each block when ids have `ranks`.

    Args:
        plan: A `BlockPlan`.
        ranks: Int array, `ranks[id]` the rank of each id.
        counts: Per-id counts (`plan.input_dim` values).

    Returns:
        A tuple of floats, one share per block, summing to 1 (all zeros when
        the counts are).

    Example:

    >>> plan = plan_blocks(4, 8, boundaries=[1])
    >>> block_masses(plan, np.arange(4), np.array([6, 2, 1, 1]))
    (0.6, 0.4)
    """
    total = counts.sum()
    blocks = plan.block_of_rank(ranks)
    masses = np.bincount(blocks, weights=counts, minlength=plan.num_blocks)
    return tuple(float(m / total) if total > 0 else 0.0 for m in masses)


def new_ranking(old_ranks, counts):
    """Ids by count (ties keep their current rank): `(order, new_ranks)` with
    `order[rank] = id` and `new_ranks[id] = rank`."""
    order = np.lexsort((old_ranks, -counts))
    return order, ranks_of_ids(order)


class LayerSnapshot:
    """The layer's weights as numpy arrays, and its outputs computed from them."""

    def __init__(self, layer):
        self._set(
            layer.plan,
            ops.convert_to_numpy(layer.remap),
            [ops.convert_to_numpy(t) for t in layer.block_embeddings],
            [None if p is None else ops.convert_to_numpy(p)
             for p in layer.block_projections],
        )

    @classmethod
    def from_arrays(cls, plan, ranks, tables, projections):
        """A snapshot of one feature's weights given as arrays (a
        `StackedEmbedding` feature's, read out of the stacked variables)."""
        snapshot = cls.__new__(cls)
        snapshot._set(plan, ranks, tables, projections)
        return snapshot

    def _set(self, plan, ranks, tables, projections):
        self.plan = plan
        self.ranks = np.asarray(ranks, dtype=np.int64)
        self.blocks = self.plan.block_of_rank(self.ranks)
        self.tables = [np.asarray(t) for t in tables]
        self.projections = [None if p is None else np.asarray(p) for p in projections]

    def outputs(self, ids):
        """Output vectors of `ids` (float64), computed like the layer."""
        result = np.zeros((ids.size, self.plan.output_dim), dtype=np.float64)
        blocks = self.blocks[ids]
        for b in np.unique(blocks):
            mask = blocks == b
            rows = self.tables[b][self.ranks[ids[mask]] - self.plan.offsets[b]]
            rows = rows.astype(np.float64)
            projection = self.projections[b]
            result[mask] = rows if projection is None else rows @ projection
        return result


def rerank_layer(layer, counts=None, optimizer=None):
    """Re-ranks `layer`'s ids by `counts` (default: its own counts).

    Args:
        layer: A built `MixedDimEmbedding` with an id -> rank table.
        counts: Optional per-id counts; default `layer.frequency_counts`.
        optimizer: Optional optimizer whose slots for the block tables follow
            the rows (kept rows moved, moved ids reset to their initial value).

    Returns:
        A `RerankReport`.

    Example:

    >>> layer = MixedDimEmbedding(1000, 16, count_frequencies=True,
    ...                           plan=plan_blocks(1000, 16, remap=True))
    >>> layer.build()
    >>> report = rerank_layer(layer, counts=np.arange(1000))   # id 999 now first
    >>> report.ids_moved > 0
    True
    """
    plan = layer.plan
    if layer.plan.has_qr_blocks:
        raise ValueError(
            f"Layer {layer.name!r} has quotient-remainder (storage='qr') blocks; "
            "re-ranking and re-planning move rows between blocks, which a QR "
            "pair cannot hold row by row. Plan without `qr_min_rows` to re-rank."
        )
    if layer.remap is None:
        raise ValueError(
            f"Layer {layer.name!r} has no id -> rank table; re-ranking needs a "
            "plan with remapped=True (count_frequencies=True gives one)."
        )
    counts = read_counts(layer) if counts is None else np.asarray(counts, np.float64)
    if counts.shape != (plan.input_dim,):
        raise ValueError(
            f"`counts` must have {plan.input_dim} entries. Received shape {counts.shape}."
        )
    snapshot = LayerSnapshot(layer)
    slots = [slot_variables(optimizer, t) for t in layer.block_embeddings]
    slot_values = [[np.asarray(ops.convert_to_numpy(s)) for s in group] for group in slots]
    fills = [[slot_initial_value(optimizer, s) for s in group] for group in slots]
    new_tables, new_slots, new_ranks, report = rerank_arrays(snapshot, counts, slot_values,
                                                             fills)

    for variable, value in zip(layer.block_embeddings, new_tables):
        variable.assign(value)
    for group, values in zip(slots, new_slots):
        for variable, value in zip(group, values):
            variable.assign(value)
    layer.remap.assign(new_ranks.astype("int32"))
    return report


def rerank_arrays(snapshot, counts, slot_values, slot_fills=None):
    """The re-ranking of one table's weights, on numpy arrays.

    Args:
        snapshot: A `LayerSnapshot` of the weights.
        counts: Per-id counts (float64).
        slot_values: Per block, the list of its optimizer slot arrays (each
            with one entry or row per row of the block's table).
        slot_fills: Per block, the value each slot gets for moved ids
            (default 0): a number, or a function of the moved ids' new
            table rows (FTRL's `linear`, whose rows decide the weights).

    Returns:
        `(new_tables, new_slots, new_ranks, report)`, the slots per block.
    """
    plan = snapshot.plan
    old_ranks, old_blocks = snapshot.ranks, snapshot.blocks
    tables, projections = snapshot.tables, snapshot.projections
    order, new_ranks = new_ranking(old_ranks, counts)
    offsets = plan.offsets
    new_tables, new_slots = [], []
    moved_total, error_num, error_den = 0, 0.0, 0.0
    for b in range(plan.num_blocks):
        ids = order[offsets[b] : offsets[b + 1]]
        stay = old_blocks[ids] == b
        table = np.empty_like(tables[b])
        table[stay] = tables[b][old_ranks[ids[stay]] - offsets[b]]
        fills = [0.0] * len(slot_values[b]) if slot_fills is None else slot_fills[b]
        group = [np.full_like(v, 0.0 if callable(fill) else fill)
                 for v, fill in zip(slot_values[b], fills)]
        for new_slot, old_slot in zip(group, slot_values[b]):
            new_slot[stay] = old_slot[old_ranks[ids[stay]] - offsets[b]]
        moving = ids[~stay]
        if moving.size:
            target = snapshot.outputs(moving)
            if projections[b] is None:
                rows = target
            else:
                rows = target @ np.linalg.pinv(projections[b].astype(np.float64))
            table[~stay] = rows.astype(table.dtype)
            for new_slot, fill in zip(group, fills):
                if callable(fill):
                    new_slot[~stay] = fill(table[~stay])
            approx = rows if projections[b] is None else rows @ projections[b]
            error_num += float(np.sum((approx - target) ** 2))
            error_den += float(np.sum(target**2))
            moved_total += int(moving.size)
        new_tables.append(table)
        new_slots.append(group)

    report = RerankReport(
        ids_moved=moved_total,
        mass_before=block_masses(plan, old_ranks, counts),
        mass_after=block_masses(plan, new_ranks, counts),
        warm_start_error=float(np.sqrt(error_num / error_den)) if error_den > 0 else 0.0,
    )
    return new_tables, new_slots, new_ranks, report

