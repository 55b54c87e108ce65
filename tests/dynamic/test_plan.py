"""How `plan_capacity` splits a budget between the tiers, the fallback and
the sketch (numpy only)."""

import pytest

from keras_mixed_dim.dynamic.plan import FLOAT_BYTES
from keras_mixed_dim.dynamic.plan import default_fallback_share
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
