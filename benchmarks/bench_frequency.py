"""FrequencyRecount on a drifting stream, and the step-time cost of counting.

A stream of ids with Zipf popularity whose ranking is permuted halfway
(yesterday's tail becomes today's head). A small regression model with one
MixedDimEmbedding is trained on it three ways at the same parameter budget:
without counting, counting without the callback, and counting with
FrequencyRecount (epoch ends). The initial ranking comes from the first
half's counts. Prints the final test loss (on the second distribution) and
the training step time with and without counting.

    python benchmarks/bench_frequency.py
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mixed_dim import FrequencyRecount  # noqa: E402
from keras_mixed_dim import MixedDimEmbedding  # noqa: E402


def stream(rng, vocab, rows, exponent, permutation):
    p = 1.0 / np.arange(1, vocab + 1) ** exponent
    ranks = rng.choice(vocab, size=rows, p=p / p.sum())
    return permutation[ranks].astype("int32")


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    @property
    def median_ms(self):
        return 1e3 * float(np.median(self.times[5:]))


def build(vocab, dim, counts, count, alpha, blocks, half_life):
    layer = MixedDimEmbedding(
        vocab, dim, counts=counts, alpha=alpha, num_blocks=blocks,
        count_frequencies=count, frequency_half_life=half_life if count else None,
        name="items",
    )
    ids = keras.Input(shape=(), dtype="int32")
    x = keras.layers.Dense(32, activation="relu")(layer(ids))
    model = keras.Model(ids, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    return model, layer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=400_000, help="per half")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--alpha", type=float, default=0.4)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--exponent", type=float, default=1.1)
    parser.add_argument("--epochs", type=int, default=3, help="per half")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--half-life", type=float, default=500.0, help="steps")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(args.vocab, 16)).astype("float32")
    direction = rng.normal(size=16).astype("float32") / 4.0

    def targets(ids):
        return np.tanh(hidden[ids] @ direction)[:, None].astype("float32")

    first_perm = rng.permutation(args.vocab)
    second_perm = rng.permutation(args.vocab)
    first = stream(rng, args.vocab, args.rows, args.exponent, first_perm)
    second = stream(rng, args.vocab, args.rows, args.exponent, second_perm)
    test = stream(rng, args.vocab, 50_000, args.exponent, second_perm)
    initial_counts = np.bincount(first, minlength=args.vocab)

    print(f"vocab {args.vocab:,}, Zipf({args.exponent}) ranking permuted after "
          f"{args.rows:,} rows x {args.epochs} epochs, dim {args.dim}, alpha "
          f"{args.alpha}, {args.blocks} blocks, batch {args.batch}, "
          f"backend {keras.backend.backend()}")
    print(f"{'run':>26} {'params':>9} {'test MSE':>9} {'step ms':>8} "
          f"{'ids moved':>10} {'block0 mass':>12}")
    results = {}
    for name, count, recount in (
        ("no counting", False, False),
        ("counting, no callback", True, False),
        ("counting + FrequencyRecount", True, True),
    ):
        keras.utils.set_random_seed(0)
        model, layer = build(args.vocab, args.dim, initial_counts, count, args.alpha,
                             args.blocks, args.half_life)
        timer = StepTimer()
        callbacks = [timer]
        recounter = FrequencyRecount() if recount else None
        if recounter:
            callbacks.append(recounter)
        for half in (first, second):
            model.fit(half, targets(half), epochs=args.epochs, batch_size=args.batch,
                      callbacks=callbacks, verbose=0)
        mse = float(model.evaluate(test, targets(test), batch_size=8192, verbose=0))
        moved = block0 = "-"
        if recounter and recounter.reports:
            last = recounter.reports[args.epochs]["items"]  # first recount after drift
            moved = f"{last.ids_moved:,}"
            block0 = f"{last.mass_before[0]:.2f}->{last.mass_after[0]:.2f}"
        results[name] = (mse, timer.median_ms)
        print(f"{name:>26} {layer.plan.params:>9,} {mse:>9.4f} {timer.median_ms:>8.2f} "
              f"{moved:>10} {block0:>12}", flush=True)
    overhead = results["counting, no callback"][1] / results["no counting"][1] - 1
    gain = 1 - results["counting + FrequencyRecount"][0] / results["no counting"][0]
    print(f"counting step-time overhead: {100 * overhead:+.1f}%; "
          f"test MSE with the callback: {100 * gain:.1f}% lower than without")


if __name__ == "__main__":
    main()
