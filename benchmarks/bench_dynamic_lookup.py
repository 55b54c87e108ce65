"""The backend's own `DynamicEmbedding` lookup (`keras_mixed_dim.backend.
dynamic_lookup()`) against the portable `keras.ops` one, on the same weights
and ids: compiled forward and forward + gradient (JAX), in turns (each round
times both, the order reversed every other round; the ratio is read round
by round). Ids: ml-100k's items mapped by `dynamic_batches` through a
`bench_streaming.py` `dynamic_md` layer (64 KB), the batch from the middle
of the stream; values and gradients of the two are checked equal first.

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python benchmarks/bench_dynamic_lookup.py \\
        [--batch 4096] [--rounds 15]
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
from keras import ops  # noqa: E402

import bench_streaming as bench  # noqa: E402
from keras_mixed_dim.backend import dynamic_lookup  # noqa: E402
from keras_mixed_dim.dynamic import dynamic_batches  # noqa: E402
from keras_mixed_dim.layers import dynamic_embedding as module  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    if keras.backend.backend() != "jax" or dynamic_lookup() is None:
        raise SystemExit("Times JAX's own lookup: run with KERAS_BACKEND=jax.")
    import jax

    stream, targets = bench.movielens_stream()
    n, batch = targets.size, args.batch
    keras.utils.set_random_seed(0)
    features = {f: bench.Feature("dynamic_md", 65536, 16, stream[f][: n // 10], 0, None)
                for f in bench.FEATURES}
    model = bench.build_model(features, 16, writes=True)
    source = (({f: stream[f][lo:lo + batch] for f in bench.FEATURES},
               targets[lo:lo + batch, None]) for lo in range(0, n - batch + 1, batch))
    mapped = list(dynamic_batches(source, {f: features[f].layer for f in bench.FEATURES},
                                  model, prefetch=0))
    layer = features["item"].layer
    x = jax.numpy.asarray(mapped[len(mapped) // 2][0]["item"])
    trainable = [v.value for v in layer.trainable_variables]
    mapping = [(v, v.value) for v in layer.non_trainable_variables]
    cotangent = jax.numpy.asarray(np.random.default_rng(1).normal(size=(batch, 16)), "float32")

    def compiled(vectors):
        def forward(values, x):
            with keras.StatelessScope(state_mapping=list(zip(
                    layer.trainable_variables, values)) + mapping):
                slot, tag, buckets = ops.unstack(x, 3, axis=-1)
                safe = ops.clip(slot, 0, layer.id_map.num_slots - 1)
                stored = ops.take(layer.slot_tags, safe, axis=0)
                admitted = ops.logical_and(ops.equal(safe, slot), ops.logical_and(
                    ops.equal(stored, tag), ops.greater(tag, 0)))
                return vectors(safe, admitted, buckets)[0]

        gradient = jax.jit(lambda values, x: jax.vjp(
            lambda v: forward(v, x), values)[1](cotangent))
        return jax.jit(forward), gradient

    own = compiled(lambda *a: dynamic_lookup().vectors(layer, *a))
    def portable_vectors(*a):
        # traced with the dispatch off: `_vectors`' own keras.ops lookup
        module.dynamic_lookup = lambda: None
        try:
            return layer._vectors(*a)
        finally:
            module.dynamic_lookup = dynamic_lookup

    portable = compiled(portable_vectors)
    for a, b in zip(own, portable):
        for u, v in zip(jax.tree_util.tree_leaves(a(trainable, x)),
                        jax.tree_util.tree_leaves(b(trainable, x))):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)

    def timed(function):
        jax.block_until_ready(function(trainable, x))
        begin = time.perf_counter()
        for _ in range(args.calls):
            result = function(trainable, x)
        jax.block_until_ready(result)
        return 1e6 * (time.perf_counter() - begin) / args.calls

    runs = {"own forward": own[0], "portable forward": portable[0],
            "own forward+gradient": own[1], "portable forward+gradient": portable[1]}
    times = {name: [] for name in runs}
    for round_ in range(args.rounds):
        for name in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):
            times[name].append(timed(runs[name]))
    print(f"jax, batch {batch}, {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}: "
          f"us per call (median)")
    for name, values in times.items():
        print(f"  {name:26s} {np.median(values):8.1f}")
    for what in ("forward", "forward+gradient"):
        ratios = np.array(times[f"portable {what}"]) / np.array(times[f"own {what}"])
        print(f"  portable/own {what}: median {np.median(ratios):.2f}x "
              f"(min {ratios.min():.2f}, max {ratios.max():.2f})")


if __name__ == "__main__":
    main()
