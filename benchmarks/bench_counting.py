"""Cost of one frequency-count update per training step, by vocabulary size.

Exact counts (int32) update in place on TensorFlow (`scatter_add`, O(batch));
counts with a half-life decay every id each step (O(vocabulary)), which is
also the portable path other backends take for exact counts. Times the
layer's own count update alone, in a `tf.function`, for one batch of ids.

    python benchmarks/bench_counting.py
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mixed_dim import MixedDimEmbedding  # noqa: E402


def milliseconds_per_update(vocab, batch, half_life, repeats):
    import tensorflow as tf

    layer = MixedDimEmbedding(vocab, 16, count_frequencies=True, num_blocks=4,
                              alpha=0.4, frequency_half_life=half_life)
    ids = np.random.default_rng(0).integers(0, vocab, size=(batch,)).astype("int32")
    layer(ids[:2])
    update = tf.function(lambda x: layer._count(x))
    update(ids)
    start = time.perf_counter()
    for _ in range(repeats):
        update(ids)
    seconds = time.perf_counter() - start
    total = float(np.sum(keras.ops.convert_to_numpy(layer.frequency_counts)))
    return seconds / repeats * 1e3, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+",
                        default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("This benchmark times the TensorFlow update paths.")
    print(f"count update of {args.batch} ids, mean of {args.repeats}, "
          f"backend {keras.backend.backend()}")
    print(f"{'vocab':>11} {'exact (in place) ms':>20} {'half-life (dense) ms':>21}")
    for vocab in args.vocab:
        exact, counted = milliseconds_per_update(vocab, args.batch, None, args.repeats)
        assert counted == (args.repeats + 1) * args.batch, counted
        decayed, _ = milliseconds_per_update(vocab, args.batch, 500.0, args.repeats)
        print(f"{vocab:>11,} {exact:>20.3f} {decayed:>21.3f}", flush=True)


if __name__ == "__main__":
    main()
