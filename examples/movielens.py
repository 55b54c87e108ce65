"""Train MF or NCF on MovieLens (or synthetic ratings) with uniform or mixed
dimension embeddings.

    python examples/movielens.py                                   # synthetic default
    python examples/movielens.py --data ../shared/data/movielens/ml-100k
    python examples/movielens.py --data ml-1m.zip --model ncf --embedding mixed \\
        --alpha 0.3 --params-per-id 4 --results-json runs/ncf.json --save runs/ncf.keras
    python examples/movielens.py --model ncf --history 10   # + a bag of recent items
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mixed_dim.datasets import Vocabulary  # noqa: E402
from keras_mixed_dim.datasets import read_ratings  # noqa: E402
from keras_mixed_dim.datasets import split_by_time  # noqa: E402
from keras_mixed_dim.datasets import split_random  # noqa: E402
from keras_mixed_dim.datasets import synthetic_ratings  # noqa: E402
from keras_mixed_dim.distribute import DISTRIBUTE_CHOICES  # noqa: E402
from keras_mixed_dim.distribute import initialize_processes  # noqa: E402
from keras_mixed_dim.distribute import jax_distribution  # noqa: E402
from keras_mixed_dim.distribute import strategy_scope  # noqa: E402
from keras_mixed_dim.datasets.movielens.vocabulary import save_vocabularies  # noqa: E402
from keras_mixed_dim.io_utils import file_sha256  # noqa: E402
from keras_mixed_dim.models import embedding_params  # noqa: E402
from keras_mixed_dim.layers.hashed_memory_embedding import lsh_signatures  # noqa: E402
from keras_mixed_dim.models import make_embedding  # noqa: E402
from keras_mixed_dim.budgets import embedding_bytes  # noqa: E402
from keras_mixed_dim.models.kinds import EMBEDDING_KINDS  # noqa: E402
from keras_mixed_dim.models import matrix_factorization  # noqa: E402
from keras_mixed_dim.models import neural_cf  # noqa: E402
from keras_mixed_dim.models.recommenders import EMBEDDING_LAYERS  # noqa: E402
from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer  # noqa: E402
from keras_mixed_dim.optimizers import dense_memory_options  # noqa: E402
from common.outputs import write_run_outputs  # noqa: E402

# every kind of the registry sizes one table (make_embedding)
MOVIELENS_KINDS = EMBEDDING_KINDS
OPTIMIZERS = ("adam", "adagrad", "sgd")


def make_optimizer(name, lr, sparse_tables=True, table_lr=None):
    """Keras's optimizer, with sparse row updates of the tables by default."""
    optimizer = {"adam": keras.optimizers.Adam, "adagrad": keras.optimizers.Adagrad,
                 "sgd": keras.optimizers.SGD}[name](lr)
    if not sparse_tables:
        return optimizer
    return SparseRowOptimizer(optimizer, table_optimizer=name, table_learning_rate=table_lr)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_argument_group("data (default: synthetic ratings)")
    source.add_argument("--data", help="MovieLens folder, ratings file or zip")
    source.add_argument("--tfds", help="tfds name, e.g. movielens/100k-ratings")
    source.add_argument("--synthetic-users", type=int, default=2_000)
    source.add_argument("--synthetic-items", type=int, default=5_000)
    source.add_argument("--synthetic-ratings", type=int, default=200_000)
    source.add_argument("--synthetic-rank", type=int, default=16)
    source.add_argument("--split", choices=["random", "time"], default="random")
    source.add_argument("--test-fraction", type=float, default=0.1)
    source.add_argument("--val-fraction", type=float, default=0.1)
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=["mf", "ncf"], default="mf")
    model.add_argument("--embedding", choices=MOVIELENS_KINDS, default="mixed",
                       help="uniform / mixed dims, or a compressed kind at "
                       "--params-per-id x 4 bytes per id, everything counted")
    model.add_argument("--dim", type=int, default=32,
                       help="uniform dim, or the base (output) dim of mixed")
    model.add_argument("--params-per-id", type=float,
                       help="embedding budget per id: the uniform dim, or "
                       "4 x this many bytes per id, every array counted (for "
                       "mixed the id -> rank table comes on top)")
    model.add_argument("--alpha", type=float, default=0.3)
    model.add_argument("--blocks", type=int, default=4)
    model.add_argument("--history", type=int, default=0, metavar="K",
                       help="NCF: also a bag of the user's last K rated items before "
                       "each rating (a mean-combined embedding of the items' kind)")
    model.add_argument("--l2", type=float, default=0.0,
                       help="L2 penalty on embeddings and biases")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--batch-size", type=int, default=1024)
    train.add_argument("--approx-activations", type=int, choices=(8, 4),
                       help="NCF: keep K-bit activations of the tower for the "
                       "backward pass (ApproxActivationDense)")
    train.add_argument("--low-rank-gradients", type=int, metavar="K",
                       help="NCF: rank-K gradients and optimizer state for the tower's "
                       "kernels (LowRankGradients)")
    train.add_argument("--lr", type=float, default=3e-3)
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                       help="the dense layers' Keras optimizer; embedding tables get "
                       "its sparse row-wise form (lazy Adam, row-wise Adagrad, SGD) "
                       "on the rows each batch looks up")
    train.add_argument("--dense-table-updates", action="store_true",
                       help="update the embedding tables with Keras's own optimizer "
                       "too (every row, every step; for comparison)")
    train.add_argument("--table-lr", type=float,
                       help="learning rate of the tables' sparse updates (default: --lr)")
    train.add_argument("--table-optimizer", choices=("adam", "adagrad", "sgd", "ftrl"),
                       help="the tables' sparse row update (default: --optimizer's "
                       "form; ftrl: FTRL-Proximal)")
    train.add_argument("--patience", type=int, default=2,
                       help="early stopping patience on validation MSE")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--distribute", choices=DISTRIBUTE_CHOICES,
                       help="mirrored / multiworker: tf.distribute (TensorFlow "
                       "backend; multiworker reads TF_CONFIG; --batch-size is "
                       "global); data / model: keras.distribution DataParallel / "
                       "ModelParallel with table rows sharded (JAX backend)")
    train.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2])
    out = parser.add_argument_group("outputs")
    out.add_argument("--results-json", help="write params, MSEs and wall time here")
    out.add_argument("--save", help="save the trained model to this .keras file")
    args = parser.parse_args(argv)
    if args.data and args.tfds:
        parser.error("pass at most one of --data and --tfds")
    if args.history < 0 or (args.history and args.model != "ncf"):
        parser.error("--history K needs K >= 0 and --model ncf")
    if args.save and not args.save.endswith(".keras"):
        parser.error(f"--save must end in .keras, got {args.save!r}")
    return args


def load(args):
    if args.data:
        return read_ratings(args.data), args.data
    if args.tfds:
        from keras_mixed_dim.datasets.movielens.tfds import load_tfds

        return load_tfds(args.tfds), args.tfds
    ratings = synthetic_ratings(
        num_users=args.synthetic_users,
        num_items=args.synthetic_items,
        num_ratings=args.synthetic_ratings,
        rank=args.synthetic_rank,
        seed=args.seed,
    )
    name = (
        f"synthetic({args.synthetic_users} users, {args.synthetic_items} items, "
        f"{args.synthetic_ratings} ratings, rank {args.synthetic_rank})"
    )
    return ratings, name


def prepare(ratings, args):
    """Splits, builds frequency-ranked vocabularies, maps ids to indices."""
    if args.split == "random":
        parts = split_random(len(ratings), args.test_fraction, args.val_fraction,
                             seed=args.seed)
    else:
        parts = split_by_time(ratings.users, ratings.timestamps,
                              args.test_fraction, args.val_fraction)
    train = ratings.subset(parts[0])
    users = Vocabulary.from_values(train.users)
    items = Vocabulary.from_values(train.items)

    history = None
    if args.history:
        history = last_rated_items(ratings.users, ratings.items, ratings.timestamps,
                                   args.history)

    def encode(index):
        part = ratings.subset(index)
        features = {"user": users.lookup(part.users), "item": items.lookup(part.items)}
        if history is not None:
            # the items of the user's earlier ratings, as item indices
            earlier = history[index]
            looked_up = items.lookup(ratings.items[np.maximum(earlier, 0)].ravel())
            features["history"] = np.where(
                earlier >= 0, np.reshape(looked_up, earlier.shape), -1).astype("int32")
        return features, part.ratings

    return users, items, [encode(index) for index in parts]


def last_rated_items(users, items, timestamps, k):
    """For each rating, the positions (into the rating arrays) of the same
    user's `k` latest ratings before it, latest first, -1 where the user has
    fewer; ties in time go by order in the data (`timestamps` None: that
    order is the time). Nothing of the rating itself leaks into its history."""
    n = len(users)
    time = np.arange(n) if timestamps is None else np.asarray(timestamps)
    order = np.lexsort((np.arange(n), time, np.asarray(users)))
    sorted_users = np.asarray(users)[order]
    history = np.full((n, k), -1, dtype=np.int64)
    for j in range(1, k + 1):
        same = np.zeros(n, dtype=bool)
        same[j:] = sorted_users[j:] == sorted_users[:-j]
        earlier = np.full(n, -1, dtype=np.int64)
        earlier[j:] = order[:-j]
        history[order, j - 1] = np.where(same, earlier, -1)
    return history


def build(args, users, items, global_mean, signature_pairs=None):
    regularizer = keras.regularizers.L2(args.l2) if args.l2 else None
    layers = []
    for name, vocab in zip(EMBEDDING_LAYERS, (users, items)):
        dim, budget_bytes = args.dim, None
        if args.params_per_id is not None:
            if args.embedding == "uniform":
                dim = max(1, int(round(args.params_per_id)))
            else:
                budget_bytes = 4 * args.params_per_id * vocab.size
                if args.embedding == "mixed" and np.any(np.diff(vocab.index_counts) > 0):
                    # "mixed" sizes its tables and projections to the
                    # parameters; its id -> rank table comes on top
                    budget_bytes += 4 * vocab.size
        signatures = None
        if args.embedding == "lma" and signature_pairs is not None:
            # a user's context is the items it rated, an item's the users
            ids, contexts = signature_pairs[name]
            signatures = lsh_signatures((ids, contexts), vocab.size, signature_size=2,
                                        seed=args.seed)
        options = dict(counts=vocab.index_counts, alpha=args.alpha,
                       num_blocks=args.blocks, budget_bytes=budget_bytes,
                       embeddings_regularizer=regularizer)
        layers.append(make_embedding(args.embedding, vocab.size, dim,
                                     signatures=signatures, name=name, **options))
    history = None
    if args.history:
        # the items' kind, size and budget, combining a bag (mean of vectors)
        history = make_embedding(args.embedding, items.size, dim, combiner="mean",
                                 name="history_embedding", **options)
    if args.distribute in ("data", "model"):
        # before the model is built, so its variables get their layouts
        jax_distribution(args.distribute, layers + ([history] if history else []))
    if args.model == "mf":
        return matrix_factorization(
            users.size, items.size, *layers, global_mean=global_mean,
            bias_regularizer=regularizer,
        )
    return neural_cf(*layers, global_mean=global_mean, history_embedding=history,
                     history_size=args.history or None)


def batches(features, targets, args, shuffle):
    """tf.data on the TensorFlow backend, plain arrays elsewhere."""
    if keras.backend.backend() == "tensorflow":
        from keras_mixed_dim.datasets.movielens.pipeline import ratings_dataset

        return ratings_dataset(features, targets, args.batch_size, shuffle, args.seed)
    return features, targets


def run(args):
    """Trains and evaluates one configuration; returns the results dict."""
    if args.distribute in ("data", "model"):
        initialize_processes()  # before anything touches a JAX device
    keras.utils.set_random_seed(args.seed)
    started = time.perf_counter()
    ratings, source = load(args)
    users, items, (train, val, test) = prepare(ratings, args)
    global_mean = float(np.mean(train[1]))
    try:
        scope = strategy_scope(args.distribute)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    with scope:
        pairs = None
        if args.embedding == "lma":
            features = train[0]
            pairs = {"user_embedding": (np.asarray(features["user"]),
                                        np.asarray(features["item"])),
                     "item_embedding": (np.asarray(features["item"]),
                                        np.asarray(features["user"]))}
        model = build(args, users, items, global_mean, pairs)
        sparse_tables = not args.dense_table_updates
        optimizer = make_optimizer(args.optimizer, args.lr, sparse_tables=False)
        if args.approx_activations or args.low_rank_gradients:
            # NCF's tower (MF has none): K-bit activations, rank-K gradients
            model, optimizer = dense_memory_options(
                model, optimizer, approx_bits=args.approx_activations,
                low_rank=args.low_rank_gradients)
        if sparse_tables:
            optimizer = SparseRowOptimizer(
                optimizer, table_optimizer=args.table_optimizer or args.optimizer,
                table_learning_rate=args.table_lr)
        model.compile(optimizer=optimizer, loss="mse")
    # tf.data batches shuffle themselves; plain arrays are shuffled by fit.
    fit_kwargs = {"shuffle": False}
    if keras.backend.backend() != "tensorflow":
        fit_kwargs = {"batch_size": args.batch_size, "shuffle": True}
    train_data = batches(*train, args, shuffle=True)
    if isinstance(train_data, tuple):
        fit_kwargs["x"], fit_kwargs["y"] = train_data
    else:
        fit_kwargs["x"] = train_data
    history = model.fit(
        epochs=args.epochs,
        validation_data=batches(*val, args, shuffle=False),
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=args.patience, restore_best_weights=True
            )
        ],
        verbose=args.verbose,
        **fit_kwargs,
    )
    mse = {}
    for name, (features, targets) in (("train", train), ("val", val), ("test", test)):
        mse[name] = float(
            model.evaluate(features, targets, batch_size=8192, verbose=0)
        ) if len(targets) else float("nan")
    embedding_names = EMBEDDING_LAYERS + (("history_embedding",) if args.history else ())
    for name in embedding_names:
        plan = getattr(model.get_layer(name), "plan", None)
        if plan is not None and args.verbose:
            print(f"{name}: {plan}")
    results = {
        "source": source,
        "model": args.model,
        "embedding": args.embedding,
        "approx_activations": args.approx_activations,
        "low_rank_gradients": args.low_rank_gradients,
        "dim": args.dim,
        "alpha": args.alpha if args.embedding == "mixed" else None,
        "params_per_id": args.params_per_id,
        "blocks": args.blocks,
        "seed": args.seed,
        "num_users": users.size,
        "num_items": items.size,
        "ratings": {"train": len(train[1]), "val": len(val[1]), "test": len(test[1])},
        "history": args.history,
        "embedding_params": embedding_params(model, embedding_names),
        "embedding_bytes": embedding_bytes([model.get_layer(n) for n in embedding_names]),
        "total_params": model.count_params(),
        "mse": mse,
        "rmse": {k: float(np.sqrt(v)) for k, v in mse.items()},
        "epochs_run": len(history.history["loss"]),
        "loss_history": [float(x) for x in history.history["loss"]],
        "val_loss_history": [float(x) for x in history.history["val_loss"]],
        "wall_seconds": time.perf_counter() - started,
    }
    chief = write_run_outputs(results, args.results_json, model, args.save)
    if args.save and chief:
        # the raw-id vocabularies the export ships as assets, bound to this
        # model file by its hash (export_model.py checks it)
        save_vocabularies(vocabulary_path(args.save), users, items,
                          meta={"model_sha256": file_sha256(args.save)})
    return results


def vocabulary_path(model_path):
    """Where `--save` puts the user / item vocabularies beside the model."""
    return str(model_path)[: -len(".keras")] + ".vocab"


def print_summary(results):
    rows = [
        ("data", results["source"]),
        ("model / embedding", f"{results['model']} / {results['embedding']}"),
        ("users / items", f"{results['num_users']:,} / {results['num_items']:,}"),
        ("embedding params", f"{results['embedding_params']:,}"),
        ("total params", f"{results['total_params']:,}"),
        ("epochs", str(results["epochs_run"])),
    ]
    for split in ("train", "val", "test"):
        rows.append(
            (f"{split} MSE (RMSE)",
             f"{results['mse'][split]:.4f} ({results['rmse'][split]:.4f})")
        )
    rows.append(("wall time", f"{results['wall_seconds']:.1f} s"))
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"{k:>{width}}  {v}" for k, v in rows))


def main(argv=None):
    args = parse_args(argv)
    print_summary(run(args))


if __name__ == "__main__":
    main()
