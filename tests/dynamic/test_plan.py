"""How `plan_capacity` splits a budget between the tiers, the fallback and
the sketch (numpy only)."""

import math

import numpy as np
import pytest

from keras_mixed_dim.dynamic.plan import BUCKETS_PER_LIVE_ID
from keras_mixed_dim.dynamic.plan import FLOAT_BYTES
from keras_mixed_dim.dynamic.plan import MAX_LIVE_SHARE
from keras_mixed_dim.dynamic.plan import WIDE_FALLBACK_BELOW
from keras_mixed_dim.dynamic.plan import default_fallback_share
from keras_mixed_dim.dynamic.plan import fallback_buckets_per_live_id
from keras_mixed_dim.dynamic.plan import plan_capacity


def fallback_bytes(plan):
    per_float = FLOAT_BYTES * (1 + plan.optimizer_slots)
    projection = plan.fallback_dim * plan.output_dim if plan.fallback_dim != plan.output_dim \
        else 0
    return plan.fallback_buckets * plan.fallback_dim * per_float, projection * per_float


@pytest.mark.parametrize("capacity, share", [(8192, 0.6), (16384, 0.6), (32768, 0.55),
                                             (65536, 0.5), (1 << 20, 0.5)])
def test_the_qr_fallback_takes_more_of_a_small_budget(capacity, share):
    assert default_fallback_share("qr", capacity) == pytest.approx(share)
    plan = plan_capacity(16, capacity)
    assert plan.fallback == "qr" and plan.fallback_dim == 4
    rows, _ = fallback_bytes(plan)
    one_row = plan.fallback_dim * FLOAT_BYTES * 3
    assert share * capacity - one_row < rows <= share * capacity
    q, r = plan.fallback_tables
    assert q + r == plan.fallback_buckets and plan.fallback_range == q * r
    assert plan.bytes <= capacity


def test_hashing_keeps_a_tenth_at_the_narrowest_width():
    plan = plan_capacity(16, 65536, fallback="hashing")
    assert plan.fallback_dim == 1 and plan.fallback_tables == (plan.fallback_buckets,)
    assert plan.fallback_range == plan.fallback_buckets
    rows, _ = fallback_bytes(plan)
    assert 0.1 * 65536 - 12 < rows <= 0.1 * 65536


def test_the_qr_range_stays_an_int32_bucket():
    plan = plan_capacity(4, 1 << 31, tier_dims=(4,), fallback_dim=4, fallback_buckets=200_000)
    q, r = plan.fallback_tables
    assert plan.fallback_range <= 1 << 30 and plan.fallback_range // r <= q


def test_bad_fallback_settings_name_the_value():
    with pytest.raises(ValueError, match="fallback='hash'"):
        plan_capacity(16, 65536, fallback="hash")
    with pytest.raises(ValueError, match="fallback_share=1.5"):
        plan_capacity(16, 65536, fallback_share=1.5)
    with pytest.raises(ValueError, match="not both"):
        plan_capacity(16, 65536, fallback_buckets=10, fallback_share=0.2)
    with pytest.raises(ValueError, match="fallback_buckets=1"):
        plan_capacity(16, 65536, fallback_buckets=1)


def qr_range(rows):
    return (rows // 2) * (rows - rows // 2)


def distinct_ids_of_a_stream(ids_in_play, seed=0):
    """Distinct ids among 100,000 Zipf draws over `ids_in_play` raw ids."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(-(2**63), 2**63 - 1, size=ids_in_play, dtype=np.int64)
    weights = 1.0 / np.arange(1, ids_in_play + 1) ** 0.8
    return int(np.unique(rng.choice(pool, 100_000, p=weights / weights.sum())).size)


def test_live_ids_grow_the_qr_fallback_only_when_the_tiers_cannot_hold_them():
    default = plan_capacity(16, 65536)
    held = sum(default.tier_rows)
    few = distinct_ids_of_a_stream(200)
    many = distinct_ids_of_a_stream(1_000_000)
    assert few <= held < many
    # a stream whose live ids the tiers hold keeps the default plan
    assert plan_capacity(16, 65536, live_ids=few) == default
    assert plan_capacity(16, 65536, live_ids=held) == default

    previous = default
    # between the default and the cap: 1.5 and 2 times the default's buckets
    between = [held + int(f * default.fallback_range / BUCKETS_PER_LIVE_ID) for f in (1.5, 2)]
    for live in sorted((*between, many, 10**9)):
        # at the default width (a wide fallback: the next test)
        plan = plan_capacity(16, 65536, live_ids=live, fallback_dim=4)
        assert plan.bytes <= 65536 and min(plan.tier_rows) >= 1
        # more live ids: a larger fallback, paid for by the tiers
        assert plan.fallback_buckets >= previous.fallback_buckets
        assert all(a <= b for a, b in zip(plan.tier_rows, previous.tier_rows))
        fallback, _ = fallback_bytes(plan)
        assert fallback <= MAX_LIVE_SHARE * 65536
        wanted = BUCKETS_PER_LIVE_ID * (live - held)
        if plan.fallback_buckets > default.fallback_buckets and (
                fallback + 2 * plan.fallback_dim * FLOAT_BYTES * 3 <= MAX_LIVE_SHARE * 65536):
            # grown, below the cap: enough buckets, and two rows fewer would not be
            assert plan.fallback_range >= wanted
            assert qr_range(plan.fallback_buckets - 2) < wanted
        previous = plan
    assert plan.fallback_buckets > default.fallback_buckets
    assert plan_capacity(16, 65536, live_ids=many) != default


@pytest.mark.parametrize("capacity", [7168, 16384, 262144])
def test_live_ids_never_leave_a_tier_without_rows_or_exceed_the_budget(capacity):
    default = plan_capacity(16, capacity)
    plan = plan_capacity(16, capacity, live_ids=10**9)
    assert plan.bytes <= capacity and min(plan.tier_rows) >= 1
    assert fallback_bytes(plan)[0] >= fallback_bytes(default)[0]
    # the fallback took all it could: a few more rows leave a tier none
    per_row = plan.fallback_dim * FLOAT_BYTES * 3
    fallback, _ = fallback_bytes(plan)
    if fallback + 2 * per_row <= MAX_LIVE_SHARE * capacity:
        with pytest.raises(ValueError, match="below one row per tier"):
            plan_capacity(16, capacity, fallback_buckets=plan.fallback_buckets + 8,
                          fallback_dim=plan.fallback_dim)


def test_bad_live_ids_name_the_value():
    for bad in (0, -3, 2.5, True, "many"):
        with pytest.raises(ValueError, match="live_ids"):
            plan_capacity(16, 65536, live_ids=bad)
    with pytest.raises(ValueError, match="fallback='hashing'.*live_ids=5000"):
        plan_capacity(16, 65536, fallback="hashing", live_ids=5000)
    with pytest.raises(ValueError, match="fallback_share=0.3.*live_ids=5000"):
        plan_capacity(16, 65536, fallback_share=0.3, live_ids=5000)
    with pytest.raises(ValueError, match="fallback_buckets=40.*live_ids=5000"):
        plan_capacity(16, 65536, fallback_buckets=40, live_ids=5000)


def test_buckets_per_live_id_count_the_ids_beyond_the_tiers():
    plan = plan_capacity(16, 65536, fallback_dim=4)
    held = sum(plan.tier_rows)
    assert plan.fallback_range == (plan.fallback_buckets // 2) ** 2
    assert fallback_buckets_per_live_id(plan, held + 1000) == plan.fallback_range / 1000
    assert fallback_buckets_per_live_id(plan, held) == math.inf


@pytest.mark.parametrize("capacity, live", [
    (65536, 1_400_000), (65536, 500_000), (65536, 150_000), (65536, 200_000),
    (163840, 1_400_000), (65536, 5000), (16384, 100_000), (16384, 1123),
    (1 << 20, 1_400_000)])
def test_a_fallback_too_small_to_tell_live_ids_apart_is_as_wide_as_the_widest_tier(
        capacity, live):
    narrow = plan_capacity(16, capacity, live_ids=live, fallback_dim=4)
    wide = plan_capacity(16, capacity, live_ids=live, fallback_dim=16)
    plan = plan_capacity(16, capacity, live_ids=live)
    # narrow unless it would give the live ids beyond the tiers under 1.5 buckets each
    beyond = live - sum(narrow.tier_rows)
    too_few = narrow.fallback_range < WIDE_FALLBACK_BELOW * beyond
    assert plan == (wide if too_few else narrow)
    assert plan.bytes <= capacity
    # an explicit width is honoured, never replaced
    assert plan_capacity(16, capacity, live_ids=live, fallback_dim=8).fallback_dim == 8
    # without `live_ids` the width stays the default
    assert plan_capacity(16, capacity).fallback_dim == 4

