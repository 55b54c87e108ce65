"""Self-contained demo: MixedDimEmbedding vs Embedding on Zipf-distributed ids.

Generates ids with Zipf popularity and a target that depends on a hidden
vector per id, trains the same tiny model with a uniform and a mixed-dimension
embedding, and prints the parameters and the final loss of each.

    python examples/zipf_demo.py
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mixed_dim import MixedDimEmbedding  # noqa: E402


def make_data(rng, vocab, rows, dim):
    popularity = 1.0 / np.arange(1, vocab + 1) ** 1.1
    popularity = popularity[rng.permutation(vocab)]
    ids = rng.choice(vocab, size=rows, p=popularity / popularity.sum())
    hidden = rng.normal(size=(vocab, dim)).astype("float32")
    direction = rng.normal(size=(dim,)).astype("float32")
    target = np.tanh(hidden[ids] @ direction / np.sqrt(dim))[:, None]
    counts = np.bincount(ids, minlength=vocab)
    return ids.astype("int32"), target.astype("float32"), counts


def build_model(embedding):
    inputs = keras.Input(shape=(), dtype="int32")
    x = embedding(inputs)
    x = keras.layers.Dense(32, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=50_000)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ids, target, counts = make_data(rng, args.vocab, args.rows, 16)
    split = int(0.9 * args.rows)
    results = {}
    for name in ("uniform", "mixed"):
        keras.utils.set_random_seed(0)
        if name == "uniform":
            embedding = keras.layers.Embedding(args.vocab, args.dim)
        else:
            embedding = MixedDimEmbedding(
                args.vocab, args.dim, counts=counts, alpha=args.alpha
            )
            print(embedding.plan)
        model = build_model(embedding)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
        model.fit(ids[:split], target[:split], epochs=args.epochs,
                  batch_size=1024, verbose=2)
        loss = model.evaluate(ids[split:], target[split:], verbose=0)
        results[name] = (embedding.count_params(), loss)
    print(f"\n{'embedding':>10} {'params':>12} {'test mse':>9}")
    for name, (params, loss) in results.items():
        print(f"{name:>10} {params:>12,} {loss:>9.4f}")
    ratio = results["uniform"][0] / results["mixed"][0]
    print(f"mixed dimensions use {ratio:.1f}x fewer embedding parameters")


if __name__ == "__main__":
    main()
