"""FrequencyRecount on a drifting stream, and the step-time cost of counting.

A stream of (user, item) pairs whose item popularity is Zipf with a ranking
permuted halfway (yesterday's tail becomes today's head). The target is a
rank-16 dot product of hidden user and item vectors, so an item needs a wide
row to be predicted well. A factorization model (uniform user embedding,
MixedDimEmbedding for items) is trained on it three ways at the same budget:
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


def build(vocab, users, dim, counts, count, alpha, blocks, half_life):
    layer = MixedDimEmbedding(
        vocab, dim, counts=counts, alpha=alpha, num_blocks=blocks,
        count_frequencies=count,
        frequency_half_life=half_life if count and half_life else None,
        name="items",
    )
    user = keras.Input(shape=(), dtype="int32", name="user")
    item = keras.Input(shape=(), dtype="int32", name="item")
    u = keras.layers.Embedding(users, dim, name="users")(user)
    score = keras.layers.Dot(axes=-1)([u, layer(item)])
    model = keras.Model({"user": user, "item": item}, score)
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    return model, layer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rows", type=int, default=300_000, help="per half")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=0.4)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--exponent", type=float, default=1.1)
    parser.add_argument("--epochs", type=int, default=3, help="per half")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--half-life", type=float, default=500.0,
                        help="steps; 0 counts exactly (int32, no decay)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(args.vocab, args.dim)).astype("float32")
    hidden_users = rng.normal(size=(args.users, args.dim)).astype("float32")

    def batch(items):
        users = rng.integers(0, args.users, size=items.size).astype("int32")
        target = np.einsum("nk,nk->n", hidden_users[users], hidden[items]) / args.dim
        return {"user": users, "item": items}, target[:, None].astype("float32")

    first_perm = rng.permutation(args.vocab)
    second_perm = rng.permutation(args.vocab)
    first = stream(rng, args.vocab, args.rows, args.exponent, first_perm)
    second = stream(rng, args.vocab, args.rows, args.exponent, second_perm)
    test = stream(rng, args.vocab, 50_000, args.exponent, second_perm)
    initial_counts = np.bincount(first, minlength=args.vocab)
    halves = [batch(first), batch(second)]
    test_data = batch(test)

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
        model, layer = build(args.vocab, args.users, args.dim, initial_counts, count,
                             args.alpha, args.blocks, args.half_life)
        timer = StepTimer()
        callbacks = [timer]
        recounter = FrequencyRecount() if recount else None
        if recounter:
            callbacks.append(recounter)
        for half in halves:
            model.fit(*half, epochs=args.epochs, batch_size=args.batch,
                      callbacks=callbacks, verbose=0)
        mse = float(model.evaluate(*test_data, batch_size=8192, verbose=0))
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
