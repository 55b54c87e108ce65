"""Where the examples/s of `DynamicEmbedding` go against the static
vocabulary (ml-100k, 64 KB per feature, the models of `bench_streaming.py`).

Maps the whole stream once on the host (timed: the host map), then replays
the mapped batches through `fit` of three models, in turns (each round runs
every model once; the best of the rounds after the first is kept, so that a
burst of load on the shared machine hits every model alike):

  dyn          the `dynamic_md` model with its row writes in the step
  dyn-noblock  the same layers without the `writes` input (no write block)
  static       the static-vocabulary model

and prints CPU milliseconds per batch (256 by default, `--batch`; two
features), the ratio of the whole dynamic batch (host map and step) to the
static one, and how many batches carry a write per feature and tier.
`--optimizer sgd` swaps Adam for plain SGD (no slots) to show the
optimizer's share per variable. Runs on the Keras backend of the process
(`KERAS_BACKEND=jax JAX_PLATFORMS=cpu`, `KERAS_BACKEND=torch`).

    python benchmarks/profile_dynamic_step.py [--optimizer sgd] [--jit-compile] [--batch 1024]
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import bench_streaming as bench  # noqa: E402
from keras_mixed_dim.dynamic import dynamic_batches  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--budget", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    # "auto": XLA on JAX (False would run its train step eagerly), none on TF
    # on CPU, as the benchmark
    bench.JIT_COMPILE = True if args.jit_compile else "auto"
    if args.optimizer == "sgd":
        # build_model compiles with Adam(0.005); the same rate without slots
        keras.optimizers.Adam = keras.optimizers.SGD
    stream, targets = bench.movielens_stream()
    n, batch = targets.size, args.batch
    warm = int(n * 0.1)

    def features(method):
        keras.utils.set_random_seed(0)
        return {f: bench.Feature(method, args.budget, 16, stream[f][:warm], 0, None)
                for f in bench.FEATURES}

    def source():
        for lo in range(0, n - batch + 1, batch):
            yield ({f: stream[f][lo:lo + batch] for f in bench.FEATURES},
                   targets[lo:lo + batch, None])

    dynamic = features("dynamic_md")
    model = bench.build_model(dynamic, 16, writes=True)
    start = time.process_time()
    mapped = list(dynamic_batches(source(), {f: dynamic[f].layer for f in bench.FEATURES},
                                  model, prefetch=0))
    host_map = 1000 * (time.process_time() - start) / len(mapped)
    for f in bench.FEATURES:
        layer = dynamic[f].layer
        written = np.array([(x[f + "_writes"][0, :, :, 0] >= 0).any(axis=-1)
                            for x, _ in mapped])
        offsets = layer.id_map.offsets
        sources = np.stack([x[f + "_writes"][0, :, :, 1].ravel() for x, _ in mapped])
        moved = [((sources >= offsets[u]) & (sources < offsets[u + 1])).any(axis=1).mean()
                 for u in range(layer.num_tiers)]
        print(f"{f}: share of batches writing to tier t {written.mean(axis=0).round(3)}, "
              f"moving a row out of tier t {np.round(moved, 3)}")
    static = features("static")
    runs = {
        "dyn": (model, mapped),
        "dyn-noblock": (bench.build_model(dynamic, 16, writes=False),
                        [({k: v for k, v in x.items() if not k.endswith("_writes")}, y)
                         for x, y in mapped]),
        "static": (bench.build_model(static, 16),
                   [({f: static[f].lookup(x[f]) for f in bench.FEATURES}, y)
                    for x, y in source()]),
    }
    best = dict.fromkeys(runs, float("inf"))
    for round_ in range(args.rounds):
        for name, (m, data) in runs.items():
            start = time.process_time()
            m.fit((b for b in data), epochs=1, verbose=0)
            if round_:   # the first round compiles
                best[name] = min(best[name], 1000 * (time.process_time() - start) / len(data))
    print(f"{keras.backend.backend()}, batch {batch}, {len(mapped)} batches, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"host map {host_map:.3f} ms/batch (CPU)")
    for name, ms in best.items():
        print(f"{name:12s} {ms:.3f} ms/batch (CPU, fit over mapped batches)")
    whole = host_map + best["dyn"]
    print(f"dynamic (map + step) {whole:.3f} ms/batch against static {best['static']:.3f}: "
          f"{best['static'] / whole:.2f}x its examples/s (step alone "
          f"{best['static'] / best['dyn']:.2f}x)")


if __name__ == "__main__":
    main()
