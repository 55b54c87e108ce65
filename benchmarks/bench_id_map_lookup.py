"""The id map's lookup of a batch's distinct keys, four ways: numpy
`searchsorted` over the sorted index (`DynamicIdMap.find`), a numpy
open-addressing table, and `tf.lookup.experimental.MutableHashTable` (eager,
and through a `tf.function` call); CPU microseconds per lookup, best of 5.
Also the sorted index's rebuild (an argsort of every admitted key).

    python benchmarks/bench_id_map_lookup.py
"""

import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

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


def main():
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
