"""Where the examples/s of `DynamicEmbedding` go against the static
vocabulary (ml-100k, 64 KB per feature, the models of `bench_streaming.py`).

Maps the whole stream once on the host (timed: the host map), looks it up
once in the static vocabularies (timed: the static lookup, the
`searchsorted` into the vocabulary and the OOV hash that
`bench_streaming.py`'s static model runs in its input generator), then
replays the mapped batches through `fit` of three models, in turns (each
round runs every model once; the best of the rounds after the first is
kept, so that a burst of load on the shared machine hits every model
alike):

  dyn          the `dynamic_md` model with its row writes in the step
  dyn-noblock  the same layers without the `writes` input (no write block)
  static       the static-vocabulary model

and prints CPU milliseconds per batch (256 by default, `--batch`; two
features), the ratio of the whole dynamic batch (host map and step) to the
static step (the line kept from earlier versions, so figures stay
comparable) and to the whole static batch (static lookup and step), and how
many batches carry a write per feature and tier.

Then the pipeline as a user runs it, wall clock: `model.fit` over
`dynamic_batches(source, layers, model)` (its prefetch thread maps ahead
while the step runs; on TensorFlow `fit` reads the generator from its own
thread instead) against `model.fit` of the static model over a generator
that does its lookup, and the same dynamic pipeline with `prefetch=0` (the
map in the consumer's thread: what the prefetch thread saves), in
interleaved rounds (`--pipeline-rounds`; the first compiles and is
dropped); examples/s, best and median of rounds. Fresh layers and models:
the map carries on from round to round (later rounds see a warm map, as
later epochs do).

`--optimizer sgd` swaps Adam for plain SGD (no slots) to show the
optimizer's share per variable. Runs on the Keras backend of the process
(`KERAS_BACKEND=jax JAX_PLATFORMS=cpu`, `KERAS_BACKEND=torch`).

    python benchmarks/profile_dynamic_step.py [--optimizer sgd] [--jit-compile] [--batch 1024]
        [--pipeline-rounds 4]
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


def movielens_setup(budget, batch):
    """`(features, source)` over ml-100k by timestamp: `features(method)`
    gives each feature's `bench.Feature` at `budget` bytes (seed 0, built on
    the first 10% of the stream), `source()` yields the stream's whole
    batches of `batch` as `(raw ids by feature, targets)`."""
    stream, targets = bench.movielens_stream()
    n, warm = targets.size, int(targets.size * 0.1)

    def features(method):
        keras.utils.set_random_seed(0)
        return {f: bench.Feature(method, budget, 16, stream[f][:warm], 0, None)
                for f in bench.FEATURES}

    def source():
        for lo in range(0, n - batch + 1, batch):
            yield ({f: stream[f][lo:lo + batch] for f in bench.FEATURES},
                   targets[lo:lo + batch, None])

    return features, source


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--budget", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--pipeline-rounds", type=int, default=4,
                        help="rounds of the wall-clock pipeline (0: skip it)")
    args = parser.parse_args()
    # "auto": XLA on JAX (False would run its train step eagerly), none on TF
    # on CPU, as the benchmark
    bench.JIT_COMPILE = True if args.jit_compile else "auto"
    if args.optimizer == "sgd":
        # build_model compiles with Adam(0.005); the same rate without slots
        keras.optimizers.Adam = keras.optimizers.SGD
    batch = args.batch
    features, source = movielens_setup(args.budget, batch)

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
    start = time.process_time()
    static_mapped = [({f: static[f].lookup(x[f]) for f in bench.FEATURES}, y)
                     for x, y in source()]
    static_map = 1000 * (time.process_time() - start) / len(static_mapped)
    runs = {
        "dyn": (model, mapped),
        "dyn-noblock": (bench.build_model(dynamic, 16, writes=False),
                        [({k: v for k, v in x.items() if not k.endswith("_writes")}, y)
                         for x, y in mapped]),
        "static": (bench.build_model(static, 16), static_mapped),
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
    print(f"static lookup {static_map:.3f} ms/batch (CPU, searchsorted + OOV hash)")
    for name, ms in best.items():
        print(f"{name:12s} {ms:.3f} ms/batch (CPU, fit over mapped batches)")
    whole = host_map + best["dyn"]
    print(f"dynamic (map + step) {whole:.3f} ms/batch against static {best['static']:.3f}: "
          f"{best['static'] / whole:.2f}x its examples/s (step alone "
          f"{best['static'] / best['dyn']:.2f}x)")
    static_whole = static_map + best["static"]
    print(f"dynamic (map + step) {whole:.3f} ms/batch against static (lookup + step) "
          f"{static_whole:.3f}: {static_whole / whole:.2f}x its examples/s; step alone "
          f"{best['static'] / best['dyn']:.2f}x")
    if args.pipeline_rounds > 0:
        pipeline(args, features, source, len(mapped) * batch)


def pipeline(args, features, source, examples):
    """Wall-clock examples/s of `fit` as a user runs it, in turns."""
    dynamic, static = features("dynamic_md"), features("static")
    dyn_model = bench.build_model(dynamic, 16, writes=True)
    static_model = bench.build_model(static, 16)
    layers = {f: dynamic[f].layer for f in bench.FEATURES}

    def static_batches():
        for x, y in source():
            yield {f: static[f].lookup(x[f]) for f in bench.FEATURES}, y

    turns = {
        "dynamic_batches": lambda: dyn_model.fit(
            dynamic_batches(source(), layers, dyn_model), epochs=1, verbose=0),
        "dynamic_batches prefetch=0": lambda: dyn_model.fit(
            dynamic_batches(source(), layers, dyn_model, prefetch=0), epochs=1, verbose=0),
        "static": lambda: static_model.fit(static_batches(), epochs=1, verbose=0),
    }
    rates = {name: [] for name in turns}
    for round_ in range(args.pipeline_rounds):
        # alternate the order, so that neither side always runs after the other
        for name in (list(turns) if round_ % 2 == 0 else list(turns)[::-1]):
            start = time.perf_counter()
            turns[name]()
            if round_:   # the first round compiles
                rates[name].append(examples / (time.perf_counter() - start))
    if not rates["static"]:
        return
    print(f"pipeline, wall clock ({args.pipeline_rounds - 1} rounds after the first; "
          f"load average {os.getloadavg()[0]:.1f}): model.fit over the generator")
    for name, values in rates.items():
        print(f"  {name:28s} best {max(values):9.0f} ex/s, median {np.median(values):9.0f}")
    print(f"  dynamic_batches / static: best {max(rates['dynamic_batches']) / max(rates['static']):.2f}x, "
          f"median {np.median(rates['dynamic_batches']) / np.median(rates['static']):.2f}x; "
          f"prefetch thread gains {np.median(rates['dynamic_batches']) / np.median(rates['dynamic_batches prefetch=0']):.2f}x")


if __name__ == "__main__":
    main()
