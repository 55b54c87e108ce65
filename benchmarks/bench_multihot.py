"""Forward + backward time of a weighted bag of 100 ids per example through
one stacked mixed-dimension table, against `keras.layers.Embedding` plus a
weighted sum over the same ids (a uniform table of the same `d`).

    python benchmarks/bench_multihot.py                      # TensorFlow
    KERAS_BACKEND=jax python benchmarks/bench_multihot.py
    python benchmarks/bench_multihot.py --rows 1000000 --batch 2048 --bag 100

Each step looks up `batch x bag` Zipf ids (-1 padding in a tenth of the
slots), combines every bag with per-id weights (`"sum"`), and takes the
gradients of a scalar loss with respect to the tables (and projections)
and the weights: `tf.function` with a `GradientTape` on TensorFlow,
`jax.jit(jax.grad)` on JAX. Rows: `embedding` (the baseline), `stacked_uniform`
(`StackedEmbedding` of one uniform table: the bag machinery alone) and
`stacked_md` (`StackedEmbedding` of one MD plan, 4 blocks, alpha 0.3).
Prints the median step time of each and the ratios to the baseline; the
target is `stacked_md` within 1.5x.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding  # noqa: E402
from keras_mixed_dim.planning import plan_blocks  # noqa: E402


class WeightedEmbeddingBag(keras.layers.Layer):
    """The baseline: `keras.layers.Embedding`, then a weighted sum per bag."""

    def __init__(self, rows, dim, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(rows, dim)

    def call(self, ids, weights):
        valid = ops.greater_equal(ids, 0)
        vectors = self.embedding(ops.where(valid, ids, 0))
        weights = ops.where(valid, weights, 0.0)
        return ops.einsum("bk,bkd->bd", weights, vectors)


def layers(rows, dim, bag):
    counts = 1.0 / np.arange(1, rows + 1) ** 1.1
    plan = plan_blocks(rows, dim, counts=counts, num_blocks=4, alpha=0.3)
    return {
        "embedding": WeightedEmbeddingBag(rows, dim),
        "stacked_uniform": StackedEmbedding([rows], dim, bag_sizes=[bag]),
        "stacked_md": StackedEmbedding([plan], dim, bag_sizes=[bag]),
    }


def batch(rows, size, bag, seed):
    rng = np.random.default_rng(seed)
    u = rng.random((size, bag))
    ids = np.minimum((rows + 1.0) ** u - 1.0, rows - 1).astype("int32")  # ~Zipf(1)
    ids[rng.random((size, bag)) < 0.1] = -1
    weights = rng.uniform(0.1, 2.0, (size, bag)).astype("float32")
    return ids, weights


def step_fn(layer):
    """A compiled `(ids, weights) -> gradients` for the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(ids, weights):
            with tf.GradientTape() as tape:
                tape.watch(weights)
                out = layer(ids, weights=weights)
                loss = tf.reduce_sum(tf.square(out))
            return tape.gradient(loss, [*layer.trainable_variables, weights])

        return lambda ids, w: [tf.convert_to_tensor(g) for g in step(ids, w)]
    if backend == "jax":
        import jax

        others = [v.value for v in layer.non_trainable_variables]

        def loss(values, ids, w):
            out, _ = layer.stateless_call(values, others, ids, weights=w)
            return (out ** 2).sum()

        grad = jax.jit(jax.grad(loss, argnums=(0, 2)))
        values = [v.value for v in layer.trainable_variables]
        return lambda ids, w: jax.block_until_ready(grad(values, ids, w))
    raise SystemExit(f"bench_multihot runs on TensorFlow or JAX, not {backend}.")


def time_layer(layer, batches, warmup, steps):
    ids, weights = batches[0]
    layer(ids[:2], weights=weights[:2])  # build
    step = step_fn(layer)
    for i in range(warmup):
        step(*batches[i % len(batches)])
    times = []
    for i in range(steps):
        ids, weights = batches[i % len(batches)]
        start = time.perf_counter()
        grads = step(ids, weights)
        if keras.backend.backend() == "tensorflow":
            _ = [g.numpy() for g in grads[-1:]]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--bag", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    batches = [batch(args.rows, args.batch, args.bag, seed) for seed in range(4)]
    results = {"backend": keras.backend.backend(), **vars(args), "seconds": {}}
    for name, layer in layers(args.rows, args.dim, args.bag).items():
        results["seconds"][name] = time_layer(layer, batches, args.warmup, args.steps)
    base = results["seconds"]["embedding"]
    print(f"{results['backend']}: rows {args.rows:,}, d {args.dim}, batch {args.batch}, "
          f"bag {args.bag}: median forward+backward step")
    for name, seconds in results["seconds"].items():
        print(f"  {name:<16} {1000 * seconds:8.2f} ms   ratio {seconds / base:.2f}")
    ratio = results["seconds"]["stacked_md"] / base
    results["ratio"] = ratio
    print(f"stacked MD / Embedding + weighted sum: {ratio:.2f} (target <= 1.5: "
          f"{'met' if ratio <= 1.5 else 'missed'})")
    if args.json:
        with open(args.json + ".partial", "w") as file:
            json.dump(results, file, indent=2)
        os.replace(args.json + ".partial", args.json)
    return results


if __name__ == "__main__":
    main()
