"""The id map's lookup of a batch's distinct keys, four ways: numpy
`searchsorted` over the sorted index (`DynamicIdMap.find`), a numpy
open-addressing table, and `tf.lookup.experimental.MutableHashTable` (eager,
and through a `tf.function` call); CPU microseconds per lookup, best of 5.
Also the sorted index's rebuild (an argsort of every admitted key).

`--prepare`: microseconds per feature per batch of the whole host map,
`DynamicEmbedding.prepare` (the layers of `bench_streaming.py`: three tiers,
`min_count=2`, lfu, `rebalance_every=50`), on the ml-100k stream (each
feature, batch 256 and 4096, 64 KB) and on a synthetic stream of random
64-bit keys (1M live ids, Zipf 1.05, batch 4096, 64 KB and 4 MB). Each
batch is timed on `--reps` identical replays (fresh layers in lockstep) and
its least time kept, so that bursts of load on a shared machine drop out.
The package comes from PYTHONPATH when set (this file's checkout
otherwise), so that two checkouts can be compared in turns:

    python benchmarks/bench_id_map_lookup.py
    PYTHONPATH=/path/to/other/checkout python benchmarks/bench_id_map_lookup.py --prepare
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# appended: a checkout on PYTHONPATH comes first (comparisons in turns)
sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_mixed_dim.dynamic.sketch import mix64  # noqa: E402


def best_us(fn, reps=2000):
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(reps):
            fn()
        best = min(best, (time.process_time() - start) / reps)
    return best * 1e6


def prepare_us(batches, budget, reps):
    """Mean over batches of the least time over `reps` replays, us."""
    from keras_mixed_dim import DynamicEmbedding

    layers = []
    for _ in range(reps):
        layer = DynamicEmbedding(16, budget, min_count=2, eviction="lfu", decay=0.999,
                                 rebalance_every=50, seed=0)
        layer.build((batches[0].shape[0], 3))
        layers.append(layer)
    total = 0.0
    for batch in batches:
        best = float("inf")
        for layer in layers:
            start = time.perf_counter()
            layer.prepare(batch)
            best = min(best, time.perf_counter() - start)
        total += best
    return 1e6 * total / len(batches)


def main_prepare(reps):
    import keras_mixed_dim

    path = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens"
    data = np.loadtxt(path / "ml-100k" / "u.data", dtype=np.int64)
    data = data[np.argsort(data[:, 3], kind="stable")]
    print(f"package {pathlib.Path(keras_mixed_dim.__file__).parent}")
    for batch in (256, 4096):
        cells = []
        for column, name in ((0, "user"), (1, "item")):
            keys = data[:, column]
            batches = [keys[lo:lo + batch] for lo in range(0, keys.size - batch + 1, batch)]
            cells.append(f"{name} {prepare_us(batches, 65536, reps):6.1f}")
        print(f"ml-100k, batch {batch:4d}, 64 KB: prepare us per batch: {', '.join(cells)}")
    rng = np.random.default_rng(0)
    live = 1_000_000
    pool = rng.integers(-(2**63), 2**63 - 1, size=live, dtype=np.int64)
    weights = 1.0 / (np.arange(live) + 1.0) ** 1.05
    weights /= weights.sum()
    batches = [pool[rng.choice(live, 4096, p=weights)] for _ in range(40)]
    for budget in (65536, 4_000_000):
        print(f"random 64-bit keys, 1M live, batch 4096, {budget // 1000} KB: prepare us per "
              f"batch {prepare_us(batches, budget, reps):7.1f}")
    print(f"load average {os.getloadavg()[0]:.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true",
                        help="time DynamicEmbedding.prepare instead of the lookups")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    if args.prepare:
        return main_prepare(args.reps)
    rng = np.random.default_rng(0)
    for size, batch in ((600, 200), (600, 3000), (50_000, 200), (50_000, 3000)):
        keys = rng.integers(-2**62, 2**62, size, dtype=np.int64)
        slots = rng.permutation(size).astype(np.int32)
        order = np.argsort(keys)
        sorted_keys, sorted_slots = keys[order], slots[order]
        query = np.unique(np.concatenate([rng.choice(keys, batch // 2),
                                          rng.integers(-2**62, 2**62, batch - batch // 2)]))

        def find():
            pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
            return np.where(sorted_keys[pos] == query, sorted_slots[pos], -1)

        capacity = 1 << int(np.ceil(np.log2(size * 2)))
        table_keys = np.zeros(capacity, np.int64)
        table_slots = np.full(capacity, -1, np.int32)
        full = np.zeros(capacity, bool)
        home = (mix64(keys, 1) & np.uint64(capacity - 1)).astype(np.int64)
        for key, slot, p in zip(keys, slots, home):
            while full[p]:
                p = (p + 1) & (capacity - 1)
            table_keys[p], table_slots[p], full[p] = key, slot, True

        def probe():
            p = (mix64(query, 1) & np.uint64(capacity - 1)).astype(np.int64)
            out = np.full(query.size, -1, np.int32)
            todo = np.arange(query.size)
            while todo.size:
                q = p[todo]
                hit = full[q] & (table_keys[q] == query[todo])
                out[todo[hit]] = table_slots[q[hit]]
                todo = todo[full[q] & ~hit]
                p[todo] = (p[todo] + 1) & (capacity - 1)
            return out

        table = tf.lookup.experimental.MutableHashTable(tf.int64, tf.int32, -1)
        table.insert(tf.constant(keys), tf.constant(slots))

        def eager():
            return table.lookup(tf.constant(query)).numpy()

        traced = tf.function(table.lookup)

        def graph():
            return traced(tf.constant(query)).numpy()

        for fn in (probe, eager, graph):
            assert (fn() == find()).all()
        print(f"map {size:>6}, {query.size:>5} distinct keys: searchsorted "
              f"{best_us(find):6.1f} us, numpy open addressing {best_us(probe):6.1f} us, "
              f"MutableHashTable eager {best_us(eager, 500):6.1f} us, through a tf.function "
              f"{best_us(graph, 500):6.1f} us")
    for n in (600, 50_000):
        keys = rng.integers(0, 2**62, n)
        print(f"sorted index rebuild, {n} keys: {best_us(lambda: np.argsort(keys), 200):.1f} us")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
