"""How a `DynamicEmbedding` spends `capacity_bytes` (numpy, no Keras).

Everything the layer holds is counted: tier tables and projections, the
fallback table and its projection, the optimizer slots of all of these
(`optimizer_slots` float32 copies of each weight: 2 for Adam), the per-slot
tags the graph checks, the host id map (key, flag, count, last-seen time,
tag, sorted index: `SLOT_BYTES` per slot), the count-min sketch and the
fallback hash's constants.
"""

import dataclasses
import math

import numpy as np

from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.checks import check_positive_int
from keras_mixed_dim.dynamic.id_map import SLOT_BYTES

TAG_BYTES = 4
# the fallback hashes three 21/22-bit pieces of a key: (3 + 1) * 3 constants
HASH_CONSTANT_BYTES = (3 + 1) * 3 * 4
DEFAULT_FALLBACK_SHARE = {"hashing": 0.1, "qr": 0.5}
# below this budget the QR fallback's default share grows, up to
# `TINY_QR_SHARE` at a quarter of it: the tiers would hold so few rows that
# the fallback serves most ids (docs/dynamic.md, streaming benchmark)
SMALL_BUDGET = 65536
TINY_QR_SHARE = 0.6


def default_fallback_share(fallback, capacity_bytes):
    """The fallback's default share of `capacity_bytes`: 0.1 for
    `"hashing"`; for `"qr"` 0.5, rising to 0.6 (log-linearly) as the budget
    falls from 64 KiB to 16 KiB and below."""
    share = DEFAULT_FALLBACK_SHARE[fallback]
    if fallback != "qr" or capacity_bytes >= SMALL_BUDGET:
        return share
    below = min(1.0, np.log(SMALL_BUDGET / capacity_bytes) / np.log(4.0))
    return share + (TINY_QR_SHARE - share) * float(below)


# With `live_ids`, the QR fallback is sized for the live ids the tiers
# cannot hold: about 32 quotient x remainder buckets each. Not for
# collisions alone (four buckets an id would leave one id in five sharing
# its bucket): a bucket's vector is the product of a quotient and a
# remainder row that many other ids share too, and the streaming benchmark
# kept gaining from more rows well past that point (ml-100k at 16 KiB:
# 1.178 at about 10 buckets per live item, 1.160 at 17; three seeds,
# docs/results/streaming.md).
# The share never falls below the default (tuned on streams whose live ids
# the tiers mostly hold) nor rises above `MAX_LIVE_SHARE`, which leaves the
# tiers about a quarter of their default rows for the ids counted most.
BUCKETS_PER_LIVE_ID = 32
MAX_LIVE_SHARE = 0.8


def live_ids_share(default_plan, live_ids):
    """The QR fallback's share of the budget for `live_ids` distinct live
    ids, given the plan at the default share: enough rows `F` that the
    quotient x remainder buckets `(F / 2)**2` reach `BUCKETS_PER_LIVE_ID`
    (32) per live id beyond the tiers' slots, between the default share and
    `MAX_LIVE_SHARE` (0.8)."""
    plan = default_plan
    beyond = max(0, int(live_ids) - sum(plan.tier_rows))
    side = math.ceil(math.sqrt(BUCKETS_PER_LIVE_ID * beyond))
    per_float = FLOAT_BYTES * (1 + plan.optimizer_slots)
    # half a row more, so that plan_capacity's floor to whole rows gives 2 * side
    wanted = (2 * side + 0.5) * plan.fallback_dim * per_float / plan.capacity_bytes
    default = default_fallback_share(plan.fallback, plan.capacity_bytes)
    return min(MAX_LIVE_SHARE, max(default, wanted))


# With `live_ids`, a narrow QR fallback that cannot give the live ids beyond
# the tiers 1.5 buckets each (at the share `live_ids_share` allows) is made
# as wide as the widest tier instead (no projection when that tier is
# `output_dim` wide, as by default): its point, telling ids apart, is lost
# to collisions either way, and then rank is what a shared vector can
# still offer. On the ~100M-id stream (50 days) width 16 won up to 3.41
# buckets per live id at width 4: 0.21 (64 KiB, three seeds) by 0.022,
# 0.86 (128 KiB) by 0.017, 1.33 (160 KiB) by 0.018, all seeds; 1.92 (192
# KiB) by 0.014 (three seeds) and 3.41 (256 KiB) by 0.011 (seed 0); it tied
# at 7.7 (384 KiB) and lost at 32 (1 MiB) by 0.07. On shorter streams
# width 4 won from 2.0 up (the same stream over 2 or 4 days, three seeds at
# 2.0 and 4.5; the small synthetic stream at 16 KiB: by 0.025 to 0.05). The
# count alone cannot separate those (what differs is how long the stream
# runs, which the layer is not told): 1.5 takes every point below 1.92 and
# none of the shorter streams' (docs/results/streaming.md, "A fallback as
# wide as the widest tier" and "The default fallback against the one-tier
# table").
WIDE_FALLBACK_BELOW = 1.5


def fallback_buckets_per_live_id(plan, live_ids):
    """Buckets of `plan`'s fallback per live id the tiers cannot hold
    (infinite when they hold all `live_ids`).

    Example:

    >>> plan = plan_capacity(16, 65536, live_ids=150_000)
    >>> round(fallback_buckets_per_live_id(plan, 150_000), 2)
    1.99
    """
    beyond = int(live_ids) - sum(plan.tier_rows)
    return plan.fallback_range / beyond if beyond > 0 else math.inf


def _live_ids_plan(options, live_ids):
    """`plan_capacity(**options)` with the QR fallback's share from
    `live_ids_share`, cut back where that share leaves a tier no row."""
    best = plan_capacity(**options)
    low, high = default_fallback_share("qr", best.capacity_bytes), live_ids_share(best, live_ids)
    if high <= low:
        return best
    try:
        return plan_capacity(**options, fallback_share=high)
    except ValueError:
        pass
    # that share leaves a tier no row: the largest that does not, by
    # bisection from the default share (which fits)
    for _ in range(20):
        middle = (low + high) / 2
        try:
            best, low = plan_capacity(**options, fallback_share=middle), middle
        except ValueError:
            high = middle
    return best


DEFAULT_SKETCH_SHARE = 0.05
FALLBACKS = ("hashing", "qr")
# the fallback's hash range is an int32 bucket (`keras_mixed_dim.layers.hashes`)
MAX_FALLBACK_RANGE = 1 << 30


@dataclasses.dataclass(frozen=True)
class DynamicPlan:
    """Shapes and bytes of a `DynamicEmbedding`.

    Attributes:
        output_dim: Width of every output vector.
        tier_rows: Slots per tier (widest first).
        tier_dims: Width of each tier's rows.
        fallback_buckets: Rows of the shared hashed fallback (with
            `fallback="qr"`, of its two tables together).
        fallback_dim: Their width.
        sketch_width, sketch_depth: The count-min sketch.
        optimizer_slots: Optimizer copies counted per float weight.
        capacity_bytes: The budget.
        fallback: `"hashing"` (one table, a row per bucket) or `"qr"` (a
            quotient and a remainder table, a bucket's vector the product
            of a row of each, so `fallback_range` buckets far exceed the
            rows).

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
    fallback: str = "qr"

    @property
    def fallback_tables(self):
        """Rows of the fallback's tables: `(buckets,)`, or with `"qr"` the
        quotient and remainder tables' `(q, r)`."""
        if self.fallback == "qr":
            q = self.fallback_buckets // 2
            return (q, self.fallback_buckets - q)
        return (self.fallback_buckets,)

    @property
    def fallback_range(self):
        """Distinct fallback buckets a key is hashed to."""
        if self.fallback == "qr":
            q, r = self.fallback_tables
            return min(q * r, MAX_FALLBACK_RANGE // r * r)
        return self.fallback_buckets

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
                  sketch_depth=2, optimizer_slots=2, fallback="qr",
                  fallback_share=None, live_ids=None):
    """Splits `capacity_bytes` into tiers, fallback and sketch.

    By default tier `t` has width `output_dim / 4**t`, the sketch takes 5% of
    the budget and the fallback (`fallback="qr"`) half of it at width
    `output_dim / 4` (at least the narrowest tier's; 60% below 16 KiB,
    `default_fallback_share`); the rest is shared
    equally between the tiers, so narrow tiers get more rows. A QR fallback
    gives nearly every key its own vector (the product of two shared rows),
    which at small budgets serves more traffic than the few rows the tiers
    could hold (the streaming benchmark in docs/dynamic.md). With
    `fallback="hashing"` the fallback takes 10% at the narrowest tier's
    width.
    `num_tiers` (default 3) sets the number of default tiers; with explicit
    `tier_dims` it may only repeat their number. `fallback_share` (in
    (0, 1)) sets the fallback's share instead of 10% when `fallback_buckets`
    is not given; `fallback="qr"` needs at least 2 fallback rows.
    `live_ids` (the distinct ids expected live at once, e.g. a day's)
    sizes the QR fallback instead (`live_ids_share`): a stream with far
    more live ids than the tiers can hold gets a larger fallback, up to
    80% of the budget, and where that still gives them under 1.5 buckets
    each (`fallback_buckets_per_live_id`), without `fallback_dim`, a
    fallback as wide as the widest tier.

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
        fallback: `"qr"` (default) or `"hashing"`: see `DynamicPlan`.
        fallback_share: The fallback's share of the budget, in (0, 1), when
            `fallback_buckets` is not given (default
            `default_fallback_share(capacity_bytes)` for `"qr"`, 0.1 for
            `"hashing"`).
        live_ids: Distinct ids expected live at once (an integer >= 1), to
            size the QR fallback from (`live_ids_share`); only with
            `fallback="qr"`, without `fallback_buckets` or
            `fallback_share`.

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
    if fallback not in FALLBACKS:
        raise ValueError(f"`fallback` must be one of {FALLBACKS}. "
                         f"Received: fallback={fallback!r}")
    if fallback_share is not None:
        if fallback_buckets is not None:
            raise ValueError(
                f"Give `fallback_buckets` or `fallback_share`, not both. Received: "
                f"fallback_buckets={fallback_buckets!r}, fallback_share={fallback_share!r}")
        if isinstance(fallback_share, bool) or not isinstance(
                fallback_share, (int, float)) or not 0.0 < fallback_share < 1.0:
            raise ValueError(f"`fallback_share` must be in (0, 1). "
                             f"Received: fallback_share={fallback_share!r}")
    if live_ids is not None:
        live_ids = check_positive_int("live_ids", live_ids)
        given = {"fallback_buckets": fallback_buckets, "fallback_share": fallback_share}
        given = {k: v for k, v in given.items() if v is not None}
        if given or fallback != "qr":
            conflict = ", ".join(f"{k}={v!r}" for k, v in given.items()) or \
                f"fallback={fallback!r}"
            raise ValueError(
                f"`live_ids` sizes the QR fallback (fallback='qr', without "
                f"fallback_buckets or fallback_share); it cannot be honoured "
                f"with {conflict}. Received: live_ids={live_ids}")
        options = dict(output_dim=output_dim, capacity_bytes=capacity,
                       tier_dims=tier_dims, fallback_dim=fallback_dim,
                       sketch_width=sketch_width, sketch_depth=sketch_depth,
                       optimizer_slots=optimizer_slots)
        plan = _live_ids_plan(options, live_ids)
        if fallback_dim is None and plan.fallback_dim != tier_dims[0] and \
                fallback_buckets_per_live_id(plan, live_ids) < WIDE_FALLBACK_BELOW:
            plan = _live_ids_plan({**options, "fallback_dim": tier_dims[0]}, live_ids)
        return plan
    fallback_dim = check_positive_int("fallback_dim", fallback_dim, allow_none=True) or (
        max(tier_dims[-1], output_dim // 4) if fallback == "qr" else tier_dims[-1])
    per_float = FLOAT_BYTES * (1 + optimizer_slots)
    least_rows = 2 if fallback == "qr" else 1
    if fallback_buckets is None:
        share = default_fallback_share(fallback, capacity) if fallback_share is None \
            else float(fallback_share)
        fallback_buckets = max(least_rows, int(share * capacity)
                               // (fallback_dim * per_float))
    fallback_buckets = check_positive_int("fallback_buckets", fallback_buckets)
    if fallback_buckets < least_rows:
        raise ValueError(f"fallback='qr' needs `fallback_buckets` >= 2 (a quotient "
                         f"and a remainder row). Received: "
                         f"fallback_buckets={fallback_buckets}")
    if sketch_width is None:
        sketch_width = max(1, int(DEFAULT_SKETCH_SHARE * capacity) // (4 * sketch_depth))
    sketch_width = check_positive_int("sketch_width", sketch_width)
    fixed = DynamicPlan(output_dim, tuple(0 for _ in tier_dims), tuple(tier_dims),
                        fallback_buckets, fallback_dim, sketch_width, sketch_depth,
                        int(optimizer_slots), capacity, fallback).bytes
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
                       capacity, fallback)
    assert plan.bytes <= capacity, (plan.bytes, capacity)
    return plan
