"""The host id map: admission, eviction rules, tiers, tags, state, keys."""

import numpy as np
import pytest

from keras_mixed_dim.dynamic import CountMinSketch
from keras_mixed_dim.dynamic import DynamicIdMap
from keras_mixed_dim.dynamic import plan_capacity
from keras_mixed_dim.dynamic import raw_keys
from keras_mixed_dim.dynamic.id_map import key_pieces


def keys_of(id_map):
    return {int(k): int(s) for s, k in enumerate(id_map.keys) if id_map.used[s]}


def test_admission_at_min_count_and_sketch_never_undercounts():
    id_map = DynamicIdMap([4], min_count=3, sketch_width=64, rebalance_every=0)
    id_map.update([10, 11, 11])
    assert keys_of(id_map) == {}
    id_map.update([10, 11])           # 11 seen 3 times, 10 twice
    assert set(keys_of(id_map)) == {11}
    id_map.update([10])
    assert set(keys_of(id_map)) == {11, 10}
    # count-min: estimates are upper bounds of the true counts
    sketch = CountMinSketch(width=8, depth=2, seed=1)
    keys = np.arange(50, dtype=np.int64) * 7919
    truth = np.arange(1, 51, dtype=np.float32)
    estimates = sketch.add(keys, truth)
    assert np.all(sketch.estimate(keys) >= truth) and np.all(estimates >= truth)


def test_lfu_evicts_the_least_counted_and_only_for_a_more_counted_key():
    id_map = DynamicIdMap([2], min_count=1, eviction="lfu", rebalance_every=0)
    id_map.update([1, 1, 1, 2])       # 1: 3, 2: 1
    id_map.update([3])                # 3's estimate 1 is not above 2's count 1
    assert set(keys_of(id_map)) == {1, 2}
    changes = id_map.update([3])      # now 2 > 1: evicts 2, never 1
    assert set(keys_of(id_map)) == {1, 3}
    assert changes.evicted_keys.tolist() == [2]
    assert changes.reset_keys.tolist() == [3]


def test_lru_evicts_the_least_recently_seen_never_a_key_of_the_batch():
    id_map = DynamicIdMap([2], min_count=1, eviction="lru", rebalance_every=0)
    id_map.update([1, 1, 1, 1])
    id_map.update([2])
    id_map.update([3, 2])             # 1 is least recent: evicted despite its count
    assert set(keys_of(id_map)) == {2, 3}
    id_map.update([4, 5, 2, 3])       # full and every slot in this batch: no eviction
    assert set(keys_of(id_map)) == {2, 3}


def test_ttl_frees_unseen_slots_in_steps_and_in_timestamp_units():
    id_map = DynamicIdMap([3], min_count=1, eviction="ttl", ttl=2, rebalance_every=0)
    id_map.update([1, 2])
    id_map.update([2])
    id_map.update([2])
    assert set(keys_of(id_map)) == {1, 2}   # 1 last seen at step 1, now 3: age 2
    id_map.update([2])
    assert set(keys_of(id_map)) == {2}
    id_map.update([5, 6, 7])          # full: ttl never evicts a live key
    assert set(keys_of(id_map)) == {2, 5, 6}
    by_time = DynamicIdMap([3], min_count=1, eviction="ttl", ttl=100, rebalance_every=0)
    by_time.update([1], timestamps=[1000])
    by_time.update([2], timestamps=[1100])
    assert set(keys_of(by_time)) == {1, 2}
    by_time.update([2], timestamps=[1101])
    assert set(keys_of(by_time)) == {2}


def test_rebalance_moves_keys_to_tiers_by_decayed_count_with_new_tags():
    id_map = DynamicIdMap([1, 3], min_count=1, rebalance_every=2, decay=1.0)
    id_map.update([5, 6])             # new keys fill the narrow tier first
    slots = keys_of(id_map)
    assert id_map.tier_of[slots[5]] == id_map.tier_of[slots[6]] == 1
    tags = id_map.tags.copy()
    changes = id_map.update([7, 7, 7])  # 7 is the most counted: promoted
    slots = keys_of(id_map)
    assert id_map.tier_of[slots[7]] == 0
    assert changes.move_to.tolist() == [slots[7]]
    assert id_map.tags[slots[7]] != tags[changes.move_from[0]]
    # stays: same slot, same tag
    kept = [k for k in (5, 6) if id_map.tier_of[slots[k]] == 1]
    assert all(id_map.tags[slots[k]] == tags[slots[k]] for k in kept)


def test_decay_lets_new_popularity_overtake_old():
    id_map = DynamicIdMap([1, 1], min_count=1, rebalance_every=1, decay=0.5)
    id_map.update([1] * 8 + [2])
    assert id_map.tier_of[keys_of(id_map)[1]] == 0
    for _ in range(4):
        id_map.update([2, 2])
    assert id_map.tier_of[keys_of(id_map)[2]] == 0


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    batches = [rng.zipf(1.5, 30) for _ in range(8)]
    first = DynamicIdMap([3, 5], min_count=2, rebalance_every=3, decay=0.9)
    for b in batches[:4]:
        first.update(b)
    second = DynamicIdMap([3, 5], min_count=2, rebalance_every=3, decay=0.9)
    second.set_state(first.get_state())
    for b in batches[4:]:
        a, c = first.update(b), second.update(b)
        assert a.reset_slots.tolist() == c.reset_slots.tolist()
    for name, value in first.get_state().items():
        np.testing.assert_array_equal(value, second.get_state()[name], err_msg=name)
    with pytest.raises(ValueError, match="capacity"):
        DynamicIdMap([3, 6]).set_state(first.get_state())


def test_raw_keys_keep_all_64_bits():
    ids = np.array([5, 2**32 + 5, -5, 2**63 - 1, -(2**63), 2**31], np.int64)
    keys = raw_keys(ids)
    assert keys.dtype == np.int64 and keys.tolist() == ids.tolist()
    assert raw_keys(np.array([2**64 - 1], np.uint64)).tolist() == [-1]
    # Python ints numpy can only hold as objects keep their 64 bits too
    assert raw_keys([2**64 - 1, -5]).tolist() == [-1, -5]
    pieces = key_pieces(keys)
    assert pieces.dtype == np.int32 and pieces.min() >= 0
    rebuilt = (pieces[:, 0].astype(np.uint64) | (pieces[:, 1].astype(np.uint64) << 22)
               | (pieces[:, 2].astype(np.uint64) << 43)).view(np.int64)
    assert rebuilt.tolist() == ids.tolist()
    id_map = DynamicIdMap([8], min_count=1)
    id_map.update(keys)
    assert len({int(s) for s in id_map.find(keys)}) == ids.size  # 5 and 2**32 + 5 apart
    strings = raw_keys(np.array(["a", "b", "a"]))
    assert strings[0] == strings[2] != strings[1]
    with pytest.raises(TypeError, match="float64"):
        raw_keys(np.array([1.5]))


def test_bad_settings_name_the_value():
    with pytest.raises(ValueError, match="min_count=0"):
        DynamicIdMap([4], min_count=0)
    with pytest.raises(ValueError, match="eviction='fifo'"):
        DynamicIdMap([4], eviction="fifo")
    with pytest.raises(ValueError, match="ttl=None"):
        DynamicIdMap([4], eviction="ttl")
    # options that would be silently ignored
    with pytest.raises(ValueError, match="ttl=5"):
        DynamicIdMap([4], eviction="lru", ttl=5)
    with pytest.raises(ValueError, match="num_tiers`=3 contradicts"):
        plan_capacity(64, 100_000, num_tiers=3, tier_dims=(64, 16))
    assert plan_capacity(64, 100_000, num_tiers=2, tier_dims=(64, 16)).tier_dims == (64, 16)
    with pytest.raises(ValueError, match="capacity_bytes`=3000 is below one row per tier"):
        plan_capacity(64, 3000, num_tiers=3)
    plan = plan_capacity(64, 100_000, num_tiers=3)
    assert plan.bytes <= 100_000 and min(plan.tier_rows) >= 1
    assert plan.tier_dims == (64, 16, 4)


def test_bytes_count_every_per_slot_array():
    """`bytes` (and the plan's SLOT_BYTES) cover every array the map keeps
    per slot."""
    from keras_mixed_dim.dynamic.id_map import SLOT_BYTES

    id_map = DynamicIdMap([3, 4, 5], min_count=1, sketch_width=64, rebalance_every=0)
    n = id_map.num_slots
    per_slot = [v for v in vars(id_map).values()
                if isinstance(v, np.ndarray) and v.shape[:1] == (n,)]
    assert sum(a.nbytes for a in per_slot) == SLOT_BYTES * n
    assert id_map.bytes == SLOT_BYTES * n + id_map.sketch.bytes
    np.testing.assert_array_equal(id_map.tier_of[np.arange(n)],
                                  np.repeat([0, 1, 2], [3, 4, 5]))
    assert id_map.tier_of[3] == 1


@pytest.mark.parametrize("eviction", ["lfu", "lru", "ttl"])
def test_merged_index_and_partial_victim_sort_equal_full_sorts(eviction):
    """Admissions merged into the sorted index equal a re-sort of every
    admitted key, and each step's victims and free slots are those of a
    full lexsort, over random admissions, evictions and rebalances."""
    from keras_mixed_dim.dynamic import id_map as id_map_module

    rng = np.random.default_rng(3)
    id_map = DynamicIdMap([20, 40, 200], min_count=1, eviction=eviction,
                          ttl=3 if eviction == "ttl" else None, rebalance_every=7,
                          sketch_width=64, decay=0.9)
    id_map.MERGE_INDEX_FROM = 0
    partial = 0
    for step in range(80):
        keys = (rng.zipf(1.2, int(rng.integers(1, 60))) * 7919) % 900 - 300
        before = id_map.get_state()
        in_batch = id_map.find(np.unique(keys))
        changes = id_map.update(keys)
        # free before admission: free before the step, and ttl's expired slots
        free = np.flatnonzero(~before["used"] | (before["used"] & np.isin(
            before["keys"], changes.evicted_keys) if eviction == "ttl" else False))
        free_order = free[np.lexsort((free, -id_map.tier_of[free]))]
        used = np.flatnonzero(id_map.used)
        order = np.argsort(id_map.keys[used])
        np.testing.assert_array_equal(id_map.index_keys[: id_map.index_size],
                                      id_map.keys[used][order])
        np.testing.assert_array_equal(id_map.index_slots[: id_map.index_size], used[order])
        if not changes.move_from.size:
            # free slots go first, narrowest tier first, then victims by
            # (count, last seen, slot) for lfu, (last seen, count, slot) for lru
            taken = changes.reset_slots
            n_free = min(free_order.size, taken.size)
            np.testing.assert_array_equal(taken[:n_free], free_order[:n_free])
            victims = taken[n_free:]
            if victims.size:
                pool = np.flatnonzero(before["used"] & ~np.isin(
                    np.arange(id_map.num_slots), in_batch))
                counts = before["counts"] * np.float32(0.9)
                first, second = ((counts, before["last"]) if eviction == "lfu"
                                 else (before["last"], counts))
                full = pool[np.lexsort((pool, second[pool], first[pool]))]
                np.testing.assert_array_equal(victims, full[: victims.size])
                partial += 8 * victims.size < pool.size
    # the partial sort (a partition, then a sort of the smallest) was used
    assert eviction == "ttl" or partial > 0
    rng = np.random.default_rng(4)
    for _ in range(50):
        pool = np.sort(rng.choice(1000, int(rng.integers(1, 300)), replace=False))
        first, second = rng.integers(0, 4, (2, pool.size))
        count = int(rng.integers(1, 40))
        np.testing.assert_array_equal(
            id_map_module._first_sorted(pool, count, first, second),
            pool[np.lexsort((pool, second, first))][:count])


def test_new_tags_across_the_modulus_equal_the_modular_formula():
    # the no-wrap shortcut and the wrapping path: tag i is
    # (next_tag + i) % TAG_MODULUS + 1, and next_tag advances modulo it
    from keras_mixed_dim.dynamic.id_map import TAG_MODULUS

    id_map = DynamicIdMap([4])
    for start, count in [(1, 3), (TAG_MODULUS - 5, 3), (TAG_MODULUS - 5, 5),
                         (TAG_MODULUS - 3, 7), (0, 0)]:
        id_map.next_tag = start
        tags = id_map._new_tags(count)
        expected = (np.arange(start, start + count, dtype=np.int64) % TAG_MODULUS) + 1
        assert tags.dtype == np.int32
        np.testing.assert_array_equal(tags, expected)
        assert id_map.next_tag == (start + count) % TAG_MODULUS


@pytest.mark.parametrize("size,count", [(700, 8), (700, 0), (700, 700), (50, 3), (1, 1)])
def test_first_by_equals_a_stable_argsort_prefix_with_ties(size, count):
    from keras_mixed_dim.dynamic.id_map import _first_by

    values = -np.random.default_rng(size + count).integers(2, 9, size).astype(np.float32)
    np.testing.assert_array_equal(_first_by(values, count),
                                  np.argsort(values, kind="stable")[:count])


@pytest.mark.parametrize("admitted,batch", [(30, 200), (30, 40), (0, 10), (30, 0)])
def testfind_distinct_equals_find(admitted, batch):
    # sorted distinct keys searched either way (the index among the keys
    # where the index is the smaller), some admitted and some not
    rng = np.random.default_rng(admitted + batch)
    id_map = DynamicIdMap([admitted or 1], min_count=1)
    pool = rng.choice(2**40, 400, replace=False) - 2**39
    if admitted:
        id_map.update(pool[:admitted])
    keys = np.unique(rng.choice(pool, batch, replace=False))
    np.testing.assert_array_equal(id_map.find_distinct(keys), id_map.find(keys))
    assert (id_map.find_distinct(keys) >= 0).sum() == np.isin(keys, pool[:admitted]).sum()
