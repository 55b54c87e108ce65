"""How a `DynamicEmbedding` spends `capacity_bytes` (numpy, no Keras).

Everything the layer holds is counted: tier tables and projections, the
fallback table and its projection, the optimizer slots of all of these
(`optimizer_slots` float32 copies of each weight: 2 for Adam), the per-slot
tags the graph checks, the host id map (key, flag, count, last-seen time,
tag, sorted index: `SLOT_BYTES` per slot), the count-min sketch and the
fallback hash's constants.
"""

import dataclasses

import numpy as np

from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.checks import check_positive_int
from keras_mixed_dim.dynamic.id_map import SLOT_BYTES

TAG_BYTES = 4
# the fallback hashes three 21/22-bit pieces of a key: (3 + 1) * 3 constants
HASH_CONSTANT_BYTES = (3 + 1) * 3 * 4
DEFAULT_FALLBACK_SHARE = 0.1
DEFAULT_SKETCH_SHARE = 0.05


@dataclasses.dataclass(frozen=True)
class DynamicPlan:
    """Shapes and bytes of a `DynamicEmbedding`.

    Attributes:
        output_dim: Width of every output vector.
        tier_rows: Slots per tier (widest first).
        tier_dims: Width of each tier's rows.
        fallback_buckets: Rows of the shared hashed fallback.
        fallback_dim: Their width.
        sketch_width, sketch_depth: The count-min sketch.
        optimizer_slots: Optimizer copies counted per float weight.
        capacity_bytes: The budget.

    Args:
        output_dim: Width of every output vector.
        tier_rows: Slots per tier (widest first).
        tier_dims: Width of each tier's rows.
        fallback_buckets: Rows of the shared hashed fallback.
        fallback_dim: Their width.
        sketch_width, sketch_depth: The count-min sketch.
        optimizer_slots: Optimizer copies counted per float weight.
        capacity_bytes: The budget.

    Example:

    >>> plan = plan_capacity(64, 10_000_000)
    >>> plan.tier_dims
    (64, 16, 4)
    """

    output_dim: int
    tier_rows: tuple
    tier_dims: tuple
    fallback_buckets: int
    fallback_dim: int
    sketch_width: int
    sketch_depth: int
    optimizer_slots: int
    capacity_bytes: int

    @property
    def float_params(self):
        """float32 entries of the tiers, projections and fallback."""
        d = self.output_dim
        tables = sum(r * w for r, w in zip(self.tier_rows, self.tier_dims))
        projections = sum(w * d for w in self.tier_dims if w != d)
        fallback = self.fallback_buckets * self.fallback_dim
        if self.fallback_dim != d:
            fallback += self.fallback_dim * d
        return tables + projections + fallback

    @property
    def bytes(self):
        """Planned bytes: the floats with `optimizer_slots` copies, the id
        map's per-slot arrays and slot tags, the sketch and the hash
        constants."""
        slots = sum(self.tier_rows)
        return (self.float_params * FLOAT_BYTES * (1 + self.optimizer_slots)
                + slots * (SLOT_BYTES + TAG_BYTES)
                + self.sketch_width * self.sketch_depth * 4 + HASH_CONSTANT_BYTES)


def plan_capacity(output_dim, capacity_bytes, num_tiers=None, tier_dims=None,
                  fallback_buckets=None, fallback_dim=None, sketch_width=None,
                  sketch_depth=2, optimizer_slots=2):
    """Splits `capacity_bytes` into tiers, fallback and sketch.

    By default tier `t` has width `output_dim / 4**t`, the fallback 10% of the
    budget at the narrowest tier's width and the sketch 5%; the rest is
    shared equally between the tiers, so narrow tiers get more rows.
    `num_tiers` (default 3) sets the number of default tiers; with explicit
    `tier_dims` it may only repeat their number.

    Args:
        output_dim: Width of every output vector.
        capacity_bytes: The byte budget: tables, fallback, sketch and
            `optimizer_slots` optimizer copies of every float weight.
        num_tiers: Number of default tiers (default 3).
        tier_dims: Explicit tier widths, widest first.
        fallback_buckets: Rows of the hashed fallback (default from the budget).
        fallback_dim: Width of the fallback (default the narrowest tier's).
        sketch_width: Counters per sketch row (default from the budget).
        sketch_depth: Rows of the sketch.
        optimizer_slots: Optimizer copies of each float weight to count.

    Returns:
        A `DynamicPlan`.

    Raises:
        ValueError: a setting is not a positive integer, or the budget does
            not fit one row per tier (the message names `capacity_bytes` and
            the least that would fit).

    Example:

    >>> plan = plan_capacity(64, 10_000_000)
    >>> plan.tier_dims, sum(plan.tier_rows) > 0
    ((64, 16, 4), True)
    """
    output_dim = check_positive_int("output_dim", output_dim)
    capacity = check_positive_int("capacity_bytes", capacity_bytes)
    sketch_depth = check_positive_int("sketch_depth", sketch_depth)
    if isinstance(optimizer_slots, bool) or not isinstance(
            optimizer_slots, (int, np.integer)) or optimizer_slots < 0:
        raise ValueError(f"`optimizer_slots` must be an integer >= 0. "
                         f"Received: optimizer_slots={optimizer_slots!r}")
    if tier_dims is None:
        num_tiers = check_positive_int("num_tiers", 3 if num_tiers is None else num_tiers)
        tier_dims = [max(1, output_dim // 4**t) for t in range(num_tiers)]
    else:
        tier_dims = [check_positive_int("tier_dims", d) for d in tier_dims]
        if num_tiers is not None and num_tiers != len(tier_dims):
            raise ValueError(
                f"`num_tiers`={num_tiers!r} contradicts tier_dims={tier_dims} "
                f"({len(tier_dims)} tiers); give one or the other.")
        if not tier_dims:
            raise ValueError("`tier_dims` must list at least one width. Received: []")
    fallback_dim = check_positive_int("fallback_dim", fallback_dim, allow_none=True) or tier_dims[-1]
    per_float = FLOAT_BYTES * (1 + optimizer_slots)
    if fallback_buckets is None:
        fallback_buckets = max(1, int(DEFAULT_FALLBACK_SHARE * capacity)
                               // (fallback_dim * per_float))
    fallback_buckets = check_positive_int("fallback_buckets", fallback_buckets)
    if sketch_width is None:
        sketch_width = max(1, int(DEFAULT_SKETCH_SHARE * capacity) // (4 * sketch_depth))
    sketch_width = check_positive_int("sketch_width", sketch_width)
    fixed = DynamicPlan(output_dim, tuple(0 for _ in tier_dims), tuple(tier_dims),
                        fallback_buckets, fallback_dim, sketch_width, sketch_depth,
                        int(optimizer_slots), capacity).bytes
    row_bytes = [d * per_float + SLOT_BYTES + TAG_BYTES for d in tier_dims]
    share = (capacity - fixed) / len(tier_dims)
    rows = [int(share // b) if share > 0 else 0 for b in row_bytes]
    if min(rows) < 1:
        least = fixed + len(tier_dims) * max(row_bytes)
        raise ValueError(
            f"`capacity_bytes`={capacity_bytes} is below one row per tier: tiers of "
            f"widths {tier_dims} with their projections, the fallback "
            f"({fallback_buckets} x {fallback_dim}), the sketch and optimizer slots "
            f"need at least {least} bytes.")
    plan = DynamicPlan(output_dim, tuple(rows), tuple(tier_dims), fallback_buckets,
                       fallback_dim, sketch_width, sketch_depth, int(optimizer_slots),
                       capacity)
    assert plan.bytes <= capacity, (plan.bytes, capacity)
    return plan
