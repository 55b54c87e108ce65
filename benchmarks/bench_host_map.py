"""The host map of `dynamic_batches` (`prefetch=0`: the mapping alone, no
train step) of two checkouts of the package, in one process, in turns:
each round maps the same batches with both (the order reversed every other
round), so that a burst of load on a shared machine hits both alike; the
ratio is read round by round. Both sides map a warm stream (one pass over
the timed batches first). `--digest` instead prints a SHA-256 of every
batch's packed ids and writes, and of the id maps' state every 50 batches
and at the end (what `save_own_variables` stores): equal digests mean
bit-identical maps (`--digest --base PATH` digests that checkout).

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python benchmarks/bench_host_map.py \
        --base /tmp/base-checkout [--stream movielens|synthetic] [--batch 4096] \
        [--steps 24] [--rounds 9] [--eviction lfu|lru|ttl]
    python benchmarks/bench_host_map.py --digest [--base ...] [--stream ...] [--batch ...]
        [--steps 400]

(`--base` a checkout of another commit, e.g. `git worktree add --detach
/tmp/base-checkout 6977d89`.) Layers as `bench_streaming.py`'s `dynamic_md`
at 64 KB per feature; with `--eviction lru` or `ttl` (ttl 200 steps) the
same layer with that eviction. Batches loop over the stream when `--steps`
asks for more than it holds.
"""

import argparse
import hashlib
import importlib
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = str(pathlib.Path(__file__).resolve().parents[1])

import keras  # noqa: E402
import numpy as np  # noqa: E402

_PREFIXES = ("keras_mixed_dim", "bench_streaming")


def load(tree, modules):
    """Imports `tree`'s package and benchmark module; keeps them in `modules`."""
    sys.path[:0] = [tree, tree + "/benchmarks"]
    bench = importlib.import_module("bench_streaming")
    dynamic_batches = importlib.import_module("keras_mixed_dim.dynamic").dynamic_batches
    layer_class = importlib.import_module("keras_mixed_dim").DynamicEmbedding
    modules[tree] = {k: v for k, v in sys.modules.items() if k.startswith(_PREFIXES)}
    for name in modules[tree]:
        del sys.modules[name]
    del sys.path[:2]
    return bench, dynamic_batches, layer_class


def activate(tree, modules):
    """Makes `tree`'s modules the imported ones (the package imports some
    modules on first use)."""
    for name in [k for k in sys.modules if k.startswith(_PREFIXES)]:
        del sys.modules[name]
    sys.modules.update(modules[tree])
    sys.path[:] = [p for p in sys.path if p not in activate.paths]
    sys.path[:0] = [tree, tree + "/benchmarks"]
    activate.paths = {tree, tree + "/benchmarks"} | activate.paths


activate.paths = set()


def build(bench, layer_class, stream, n, eviction):
    keras.utils.set_random_seed(0)
    features = {f: bench.Feature("dynamic_md", 65536, 16, stream[f][: n // 10], 0, None)
                for f in bench.FEATURES}
    if eviction != "lfu":
        for f in features:
            features[f].layer = layer_class(
                16, 65536, min_count=2, eviction=eviction, decay=bench.DECAY_PER_256,
                rebalance_every=50, seed=0, **({"ttl": 200} if eviction == "ttl" else {}))
    model = bench.build_model(features, 16, writes=True)
    return model, {f: features[f].layer for f in bench.FEATURES}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="the other checkout (timing)")
    parser.add_argument("--digest", action="store_true")
    parser.add_argument("--stream", choices=["movielens", "synthetic"], default="movielens")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--eviction", choices=["lfu", "lru", "ttl"], default="lfu")
    args = parser.parse_args()
    if not args.digest and not args.base:
        parser.error("give --base (timing) or --digest")
    modules = {}
    # a digest of `--base` where given (to compare with this checkout's)
    trees = {"this": args.base or HERE} if args.digest else {"base": args.base, "this": HERE}
    sides = {name: load(tree, modules) for name, tree in trees.items()}
    bench = sides["this"][0]
    if args.stream == "movielens":
        stream, targets = bench.movielens_stream()
    else:
        stream, targets, _ = bench.synthetic_stream(20, 10000, 20000, 0.1, 0)
    n, batch = targets.size, args.batch

    def source(start):
        lo = start
        for _ in range(args.steps):
            if lo + batch > n:
                lo = 0
            yield ({f: stream[f][lo:lo + batch] for f in bench.FEATURES},
                   targets[lo:lo + batch, None])
            lo += batch

    if args.digest:
        activate(trees["this"], modules)
        model, layers = build(bench, sides["this"][2], stream, n, args.eviction)
        digest = hashlib.sha256()
        for i, (x, _) in enumerate(sides["this"][1](source(0), layers, model, prefetch=0)):
            for key in sorted(x):
                value = np.ascontiguousarray(x[key])
                digest.update(f"{key} {value.dtype} {value.shape}".encode())
                digest.update(value.tobytes())
            if i % 50 == 49 or i == args.steps - 1:
                for layer in layers.values():
                    for name, value in sorted(layer.id_map.get_state().items()):
                        digest.update(name.encode())
                        digest.update(np.ascontiguousarray(value).tobytes())
        print(f"{args.stream} {args.eviction} batch {batch} steps {args.steps}: "
              f"{digest.hexdigest()}")
        return
    state = {}
    for name, (side_bench, dynamic_batches, layer_class) in sides.items():
        activate(trees[name], modules)
        model, layers = build(side_bench, layer_class, stream, n, args.eviction)
        for _ in dynamic_batches(source(0), layers, model, prefetch=0):
            pass   # a warm map
        state[name] = (dynamic_batches, layers, model)
    times = {name: [] for name in sides}
    start = (args.steps * batch) % n
    for round_ in range(args.rounds):
        for name in (list(sides) if round_ % 2 == 0 else list(sides)[::-1]):
            dynamic_batches, layers, model = state[name]
            activate(trees[name], modules)
            begin = time.process_time()
            count = sum(1 for _ in dynamic_batches(source(start), layers, model, prefetch=0))
            times[name].append(1000 * (time.process_time() - begin) / count)
        start = (start + args.steps * batch) % n
    ratios = np.array(times["base"]) / np.array(times["this"])
    print(f"{keras.backend.backend()}, {args.stream}, {args.eviction}, batch {batch}, "
          f"{args.rounds} rounds of {args.steps} batches, load average "
          f"{os.getloadavg()[0]:.1f}: host map CPU ms/batch, median base "
          f"{np.median(times['base']):.3f}, this {np.median(times['this']):.3f}; base/this "
          f"round by round: median {np.median(ratios):.2f}x (min {ratios.min():.2f}, "
          f"max {ratios.max():.2f})")


if __name__ == "__main__":
    main()
