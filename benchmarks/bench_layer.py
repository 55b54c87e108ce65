"""MixedDimEmbedding against keras.layers.Embedding: speed and parameters.

Vocabulary of 1,000,000 ids drawn Zipf(1.05); 1-D batches of 8,192 ids and
multi-hot batches of 8,192 x 8 ids (summed); base dims 16 and 64; 4
equal-mass blocks at alpha 0.3; TensorFlow backend on the CPU; both layers
in one process, each step compiled with `tf.function`.

    python benchmarks/bench_layer.py            # the issue's setting
    python benchmarks/bench_layer.py --quick    # a smaller smoke run
"""

import argparse
import itertools
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_mixed_dim import MixedDimEmbedding  # noqa: E402
from keras_mixed_dim.planning import zipf_counts  # noqa: E402


def zipf_ids(rng, vocab, exponent, shape):
    """Ids in rank order (0 most frequent), P(id) ~ 1 / (id + 1)**exponent."""
    p = zipf_counts(vocab, exponent)
    cdf = np.cumsum(p / p.sum())
    ids = np.searchsorted(cdf, rng.random(int(np.prod(shape))), side="right")
    return np.minimum(ids, vocab - 1).astype("int32").reshape(shape)


def make_layers(kind, vocab, dim, multi_hot, alpha, num_blocks):
    if kind == "Embedding":
        layer = keras.layers.Embedding(vocab, dim)
        reduce_bag = multi_hot
    else:
        # Ids arrive already ranked (id 0 most frequent), so the layer needs
        # no remap table; the Zipf exponent of the data sets the block masses.
        layer = MixedDimEmbedding(
            vocab,
            dim,
            counts=zipf_counts(vocab, 1.05),
            alpha=alpha,
            num_blocks=num_blocks,
            combiner="sum" if multi_hot else None,
        )
        reduce_bag = False
    return layer, reduce_bag


def time_calls(fn, batches, seconds, repeats=3):
    """Best calls per second over `repeats` windows of `seconds` each."""
    fn(batches[0])  # trace and warm up
    fn(batches[1 % len(batches)])
    best = 0.0
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            out = fn(batches[calls % len(batches)])
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and calls >= 3:
                break
        _ = np.asarray(out)
        best = max(best, calls / elapsed)
    return best


def bench_one(kind, vocab, dim, batch, bag, alpha, num_blocks, seconds, rng, jit):
    multi_hot = bag > 1
    shape = (batch, bag) if multi_hot else (batch,)
    batches = [tf.constant(zipf_ids(rng, vocab, 1.05, shape)) for _ in range(8)]
    layer, reduce_bag = make_layers(kind, vocab, dim, multi_hot, alpha, num_blocks)
    layer.build(shape)

    def forward(ids):
        out = layer(ids)
        return tf.reduce_sum(out, axis=1) if reduce_bag else out

    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(layer.trainable_variables)

    @tf.function(jit_compile=jit)
    def forward_step(ids):
        return forward(ids)

    @tf.function(jit_compile=jit)
    def train_step(ids):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(forward(ids) - 1.0))
        grads = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply(grads, layer.trainable_variables)
        return loss

    lookups = batch * bag
    forward_rate = time_calls(forward_step, batches, seconds) * lookups
    train_rate = time_calls(train_step, batches, seconds)
    params = int(sum(np.prod(v.shape) for v in layer.weights))
    return forward_rate, train_rate, params


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--bag", type=int, default=8)
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--compile",
        nargs="+",
        choices=["graph", "xla"],
        default=["graph", "xla"],
        help="tf.function modes to measure: plain graph and/or jit_compile=True",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    if args.quick:
        args.vocab, args.batch, args.seconds = 20_000, 512, 0.3
    rng = np.random.default_rng(0)

    print(
        f"vocab {args.vocab:,} Zipf(1.05), batch {args.batch:,}, alpha "
        f"{args.alpha}, {args.blocks} blocks, TF {tf.__version__} CPU, "
        f"{os.cpu_count()} cores"
    )
    header = (
        f"{'mode':>5} {'input':>10} {'dim':>4} {'layer':>17} {'params':>12} "
        f"{'lookups/s':>12} {'train steps/s':>14} {'fwd x':>6} {'train x':>8} "
        f"{'params /':>9}"
    )
    print(header)
    print("-" * len(header))
    for mode, bag, dim in itertools.product(args.compile, (1, args.bag), args.dims):
        jit = mode == "xla"
        base = bench_one(
            "Embedding", args.vocab, dim, args.batch, bag, args.alpha,
            args.blocks, args.seconds, rng, jit,
        )
        mixed = bench_one(
            "MixedDimEmbedding", args.vocab, dim, args.batch, bag, args.alpha,
            args.blocks, args.seconds, rng, jit,
        )
        shape = f"{args.batch}" if bag == 1 else f"{args.batch}x{bag}"
        for name, (fwd, train, params) in (
            ("Embedding", base),
            ("MixedDimEmbedding", mixed),
        ):
            ratios = ""
            if name != "Embedding":
                ratios = (
                    f"{fwd / base[0]:>6.2f} {train / base[1]:>8.2f} "
                    f"{base[2] / params:>9.1f}"
                )
            print(
                f"{mode:>5} {shape:>10} {dim:>4} {name:>17} {params:>12,} "
                f"{fwd:>12,.0f} {train:>14.2f} {ratios}"
            )


if __name__ == "__main__":
    main()
