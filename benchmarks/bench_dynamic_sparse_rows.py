"""A `DynamicEmbedding` step's time against its capacity: `SparseRowOptimizer`
(lazy Adam on the rows a batch read) against Keras's dense Adam.

Four models in one process (ids -> `DynamicEmbedding(16, capacity)` ->
`Dense(1)`, an `IdSafeModel` so that JAX takes the row step): a small and a
large capacity (1 MB and 256 MB by default), each under each optimizer, fed
the same batches of ids that the host `update` admitted beforehand (the
timed part is `train_on_batch` only, the step the optimizer changes). The
models take turns, round after round, the order reversed every other round,
so a burst of load on a shared machine hits all four alike; each round
gives the ratio large/small per optimizer, and the median of the rounds is
printed with the load average. Runs on the Keras backend of the process
(`KERAS_BACKEND=jax JAX_PLATFORMS=cpu`, `KERAS_BACKEND=torch`).

    python benchmarks/bench_dynamic_sparse_rows.py [--capacities 1e6 256e6] [--batch 1024]
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# PyTorch's OpenMP threads spin on their barriers; on a shared machine that
# cost its steps 40x here (as `interleaved.py` notes for its workers)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mixed_dim import DynamicEmbedding  # noqa: E402
from keras_mixed_dim import IdSafeModel  # noqa: E402
from keras_mixed_dim import SparseRowOptimizer  # noqa: E402


def build(capacity, sparse, batches, dim):
    keras.utils.set_random_seed(0)
    layer = DynamicEmbedding(dim, int(capacity), min_count=1, rebalance_every=0)
    ids = keras.Input((3,), dtype="int32")
    model = IdSafeModel(ids, keras.layers.Dense(1)(layer(ids)))
    optimizer = (SparseRowOptimizer(keras.optimizers.Adam(1e-3), table_optimizer="adam")
                 if sparse else keras.optimizers.Adam(1e-3))
    model.compile(optimizer, "mse")
    # admitted once, before any timing: the steps then read the same rows
    packed = [layer.update(x, optimizer=optimizer) for x, _ in batches]
    data = [(p, y) for p, (_, y) in zip(packed, batches)]
    model.train_on_batch(*data[0])   # compiles
    model.train_on_batch(*data[1])
    return model, data, layer.plan.tier_rows


def time_steps(model, data, steps):
    start = time.perf_counter()
    for i in range(steps):
        logs = model.train_on_batch(*data[i % len(data)])
    float(np.asarray(logs if not isinstance(logs, list) else logs[0]))  # synchronise
    return (time.perf_counter() - start) / steps * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacities", type=float, nargs=2, default=(1e6, 256e6))
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # Zipf ids: a few thousand distinct per batch, as a stream's
    batches = [(rng.zipf(1.2, args.batch).astype(np.int64) * 7919,
                rng.normal(size=(args.batch, 1)).astype("float32")) for _ in range(4)]
    configs = [(c, s) for c in args.capacities for s in (True, False)]
    models = {}
    for capacity, sparse in configs:
        models[capacity, sparse] = build(capacity, sparse, batches, args.dim)
        print(f"# built {capacity / 1e6:g} MB {'sparse' if sparse else 'keras'}: "
              f"tier rows {models[capacity, sparse][2]}", flush=True)
    times = {k: [] for k in configs}
    loads = []
    for r in range(args.rounds):
        for key in (configs if r % 2 == 0 else configs[::-1]):
            model, data, _ = models[key]
            times[key].append(time_steps(model, data, args.steps))
        loads.append(os.getloadavg()[0])
    small, large = args.capacities
    print(f"backend {keras.backend.backend()}, batch {args.batch}, dim {args.dim}, "
          f"{args.rounds} rounds x {args.steps} steps, load average "
          f"{min(loads):.1f}-{max(loads):.1f}")
    print("| optimizer | ms/step at %g MB | ms/step at %g MB | ratio large/small "
          "(median of rounds) |" % (small / 1e6, large / 1e6))
    print("|---|---|---|---|")
    for sparse, name in ((True, "SparseRowOptimizer (lazy Adam)"), (False, "keras Adam")):
        a, b = times[small, sparse], times[large, sparse]
        ratios = [y / x for x, y in zip(a, b)]
        print(f"| {name} | {statistics.median(a):.2f} | {statistics.median(b):.2f} | "
              f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}) |")
    ratios = [k / s for s, k in zip(times[large, True], times[large, False])]
    print(f"keras Adam / SparseRowOptimizer at {large / 1e6:g} MB: "
          f"{statistics.median(ratios):.1f}x (median of rounds)")


if __name__ == "__main__":
    main()
