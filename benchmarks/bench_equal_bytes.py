"""Every embedding compression at equal bytes: uniform, hashing, QR, MD
(table, block), MD+QR, ROBE and LMA at 1/4, 1/16 and 1/64 of the uniform
model's embedding bytes (everything counted: remaps, signatures, hash
constants), on MovieLens MF / NCF and a Criteo-like DLRM.

Each run trains with Adam, early-stops on a validation split (best epoch
restored) and reports the held-out test metric. With the TensorFlow backend
the first seed's model of every cell is exported with `export_for_serving`
and timed through the TensorFlow C API in a separate process
(`benchmarks/capi_latency.py`): p50 latency at batch 1 and 512. Prints one
table per part.

    python benchmarks/bench_equal_bytes.py                        # all parts
    python benchmarks/bench_equal_bytes.py --parts criteo --seeds 0 1 2 \\
        --criteo-rows 400000 --epochs 6                             # larger

Parts: `synthetic` (synthetic MovieLens, MF), `ml100k` (real ml-100k from
../shared/data, MF and NCF; skipped when absent), `criteo` (synthetic rows
at Kaggle's cardinalities scaled by --cardinality-scale, DLRM).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mixed_dim.datasets import Vocabulary  # noqa: E402
from keras_mixed_dim.datasets import read_ratings  # noqa: E402
from keras_mixed_dim.datasets import split_random  # noqa: E402
from keras_mixed_dim.datasets import synthetic_ratings  # noqa: E402
from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES  # noqa: E402
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo  # noqa: E402
from keras_mixed_dim.layers.hashed_memory_embedding import lsh_signatures  # noqa: E402
from keras_mixed_dim.models import make_embedding  # noqa: E402
from keras_mixed_dim.models import matrix_factorization  # noqa: E402
from keras_mixed_dim.models import neural_cf  # noqa: E402
from keras_mixed_dim.models.dlrm import dlrm  # noqa: E402
from keras_mixed_dim.models.dlrm import embedding_layers  # noqa: E402
from keras_mixed_dim.models.dlrm import embedding_summary  # noqa: E402
from keras_mixed_dim import embedding_bytes  # noqa: E402
from keras_mixed_dim.budgets import BudgetTooSmall  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = ("uniform", "hashing", "qr", "table", "mixed", "table_blocks", "md_qr",
           "robe", "lma")
CAPI_LATENCY = pathlib.Path(__file__).resolve().parent / "capi_latency.py"


class StepTimer(keras.callbacks.Callback):
    """Median wall time of a training step after the first epoch (compile)."""

    def __init__(self):
        super().__init__()
        self.times, self.epoch = [], 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch > 0 or batch > 5:
            self.times.append(time.perf_counter() - self.start)

    @property
    def median_ms(self):
        return 1000 * float(np.median(self.times)) if self.times else float("nan")


# ---------------------------------------------------------------- MovieLens


def movielens_parts(ratings, seed):
    parts = split_random(len(ratings), 0.1, 0.1, seed=seed)
    train = ratings.subset(parts[0])
    users = Vocabulary.from_values(train.users)
    items = Vocabulary.from_values(train.items)

    def encode(index):
        part = ratings.subset(index)
        return ({"user": users.lookup(part.users).astype("int32"),
                 "item": items.lookup(part.items).astype("int32")},
                part.ratings.astype("float32"))

    return users, items, [encode(index) for index in parts]


def export_for_timing(model, args, name):
    """Exports `model` for the C API timing; None when not timed."""
    if args.serve_requests <= 0 or keras.backend.backend() != "tensorflow":
        return None
    from keras_mixed_dim.export import export_for_serving

    return str(export_for_serving(model, args.work_dir / "serving", name,
                                  output_names="output").path)


def serving_latencies(rows, inputs, args):
    """`{export path: {"1": [p50, p99], "512": [...]}}` for the rows' exports,
    from one C API process (no TensorFlow Python package, as a server)."""
    exports = [r["export"] for _, _, results in rows for r in results if r.get("export")]
    if not exports:
        return {}
    inputs_path = args.work_dir / f"requests_{len(exports)}_{time.time_ns()}.npz"
    # 512 requests rows (cycled when the test split is smaller)
    np.savez(inputs_path, **{k: np.resize(np.asarray(v), (512,) + np.shape(v)[1:])
                             for k, v in inputs.items()})
    result = subprocess.run([sys.executable, str(CAPI_LATENCY), str(args.serve_requests),
                             str(inputs_path), *exports], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"C API timing failed:\n{result.stderr[-3000:]}", flush=True)
        return {}
    return json.loads(result.stdout.strip().splitlines()[-1])


def movielens_run(method, fraction, model_kind, users, items, data, dim, args, seed,
                  export_name=None):
    train, val, test = data
    keras.utils.set_random_seed(seed)
    layers = []
    for name, vocab, own, other in (("user_embedding", users, "user", "item"),
                                    ("item_embedding", items, "item", "user")):
        budget_bytes = None if method == "uniform" else 4 * vocab.size * dim / fraction
        signatures = None
        if method == "lma":
            signatures = lsh_signatures((train[0][own], train[0][other]), vocab.size,
                                        signature_size=2, seed=seed)
        layers.append(make_embedding(
            method, vocab.size, dim, counts=None, budget_bytes=budget_bytes,
            signatures=signatures, seed=seed, name=name))
    mean = float(train[1].mean())
    if model_kind == "mf":
        model = matrix_factorization(users.size, items.size, *layers, global_mean=mean)
    else:
        model = neural_cf(*layers, global_mean=mean, hidden=(64, 32))
    model.compile(keras.optimizers.Adam(args.lr), "mse", jit_compile=args.jit_compile)
    timer = StepTimer()
    stop = keras.callbacks.EarlyStopping("val_loss", patience=args.patience,
                                         restore_best_weights=True)
    history = model.fit(*train, validation_data=val, epochs=args.epochs,
                        batch_size=args.batch_size, verbose=0, callbacks=[stop, timer])
    test_mse = float(model.evaluate(*test, batch_size=8192, verbose=0))
    best_epoch = int(np.argmin(history.history["val_loss"])) + 1
    return {"bytes": embedding_bytes(layers), "quality": test_mse, "epoch": best_epoch,
            "step_ms": timer.median_ms,
            "export": export_name and export_for_timing(model, args, export_name)}


def movielens_part(title, ratings, model_kinds, args, dim):
    for model_kind in model_kinds:
        rows = []
        per_seed = [movielens_parts(ratings, seed) for seed in args.seeds]
        for fraction in args.fractions:
            for method in args.methods:
                if method == "uniform" and fraction != args.fractions[0]:
                    continue
                results = []
                try:
                    for seed, (users, items, data) in zip(args.seeds, per_seed):
                        name = (f"{title.split()[0].lower()}_{model_kind}_{method}_"
                                f"{fraction}" if seed == args.seeds[0] else None)
                        results.append(movielens_run(method, 1 if method == "uniform"
                                                     else fraction, model_kind, users,
                                                     items, data, dim, args, seed, name))
                except BudgetTooSmall as error:
                    print(f"skipped {method} at 1/{fraction}: {error}")
                    continue
                rows.append((method, 1 if method == "uniform" else fraction, results))
                report_row(rows[-1], uniform_bytes=rows[0][2][0]["bytes"], metric="MSE")
        latency = serving_latencies(rows, per_seed[0][2][2][0], args)
        print_table(f"{title}, {model_kind.upper()} d={dim}: test MSE (mean ± std "
                    f"over seeds {args.seeds})", rows, "MSE", latency)


# ------------------------------------------------------------------- Criteo


def criteo_part(args):
    cardinalities = [max(2, int(round(c * args.cardinality_scale)))
                     for c in KAGGLE_CARDINALITIES]
    dim = args.criteo_dim
    uniform_bytes = 4 * dim * sum(cardinalities)
    rows = []
    for fraction in args.fractions:
        for method in args.methods:
            if method == "uniform" and fraction != args.fractions[0]:
                continue
            results = []
            try:
                for seed in args.seeds:
                    name = f"criteo_{method}_{fraction}" if seed == args.seeds[0] else None
                    results.append(criteo_run(method, 1 if method == "uniform"
                                              else fraction, cardinalities, uniform_bytes,
                                              dim, args, seed, name))
            except BudgetTooSmall as error:
                print(f"skipped {method} at 1/{fraction}: {error}")
                continue
            rows.append((method, 1 if method == "uniform" else fraction, results))
            report_row(rows[-1], uniform_bytes=uniform_bytes, metric="AUC")
    dense, categorical, _ = SyntheticCriteo(512, cardinalities, seed=99).arrays()
    latency = serving_latencies(
        rows, {"dense": dense, "categorical": categorical.astype("int32")}, args)
    print_table(f"Criteo-like DLRM ({args.criteo_rows:,} rows, {len(cardinalities)} "
                f"features, {sum(cardinalities):,} ids, d={dim}): test AUC / logloss "
                f"at the best validation epoch (seeds {args.seeds})", rows, "AUC", latency)


def criteo_run(method, fraction, cardinalities, uniform_bytes, dim, args, seed,
               export_name=None):
    generator = SyntheticCriteo(args.criteo_rows, cardinalities, seed=seed)
    dense, categorical, labels = generator.arrays()
    n = len(labels)
    a, b = int(0.8 * n), int(0.9 * n)
    split = [slice(0, a), slice(a, b), slice(b, n)]
    parts = [({"dense": dense[s], "categorical": categorical[s].astype("int32")},
              labels[s]) for s in split]
    keras.utils.set_random_seed(seed)
    signatures = None
    if method == "lma":
        # a value's context: the training rows it appears in
        row_ids = np.arange(a)
        signatures = [lsh_signatures((categorical[:a, f], row_ids), c, signature_size=2,
                                     seed=seed) for f, c in enumerate(cardinalities)]
    mode = method
    budget_bytes = uniform_bytes / fraction
    embeddings = embedding_layers(cardinalities, dim, mode, budget_bytes=budget_bytes
                                  if mode != "uniform" else None,
                                  block_min_rows=1000, signatures=signatures, seed=seed)
    model = dlrm(embeddings, dim, bottom=(64, 32), top=(64, 32),
                 stacked=False)  # the documented layout
    model.compile(keras.optimizers.Adam(args.lr),
                  "binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc"),
                           keras.metrics.BinaryCrossentropy(name="logloss")],
                  jit_compile=args.jit_compile)
    timer = StepTimer()
    stop = keras.callbacks.EarlyStopping("val_auc", mode="max", patience=args.patience,
                                         restore_best_weights=True)
    history = model.fit(*parts[0], validation_data=parts[1], epochs=args.epochs,
                        batch_size=args.batch_size, verbose=0, callbacks=[stop, timer])
    metrics = model.evaluate(*parts[2], batch_size=8192, verbose=0, return_dict=True)
    return {"bytes": embedding_summary(embeddings)["bytes"], "quality": metrics["auc"],
            "logloss": metrics["logloss"],
            "epoch": int(np.argmax(history.history["val_auc"])) + 1,
            "step_ms": timer.median_ms,
            "val_auc": history.history["val_auc"],
            "export": export_name and export_for_timing(model, args, export_name)}


# ------------------------------------------------------------------ output


def report_row(row, uniform_bytes, metric):
    method, fraction, results = row
    q = [r["quality"] for r in results]
    extra = ""
    if "logloss" in results[0]:
        extra = f" logloss {np.mean([r['logloss'] for r in results]):.4f}"
        extra += " val AUC by epoch " + str([round(v, 4) for v in results[0]["val_auc"]])
    print(f"  {method:8s} 1/{fraction:<3d} bytes {results[0]['bytes']:>10,} "
          f"({results[0]['bytes'] / uniform_bytes:.4f} of uniform) {metric} "
          f"{np.mean(q):.4f} ± {np.std(q):.4f}{extra} best epochs "
          f"{[r['epoch'] for r in results]} step {np.mean([r['step_ms'] for r in results]):.2f} ms",
          flush=True)


def print_table(title, rows, metric, latency=None):
    print(f"\n{title}")
    uniform = rows[0][2]
    uniform_step = np.mean([r["step_ms"] for r in uniform])
    header = (f"| method | budget | bytes | of uniform | {metric} | spread | "
              + ("logloss | " if metric == "AUC" else "") + "best epoch | step ms | step / uniform |"
              + (" serve p50 ms b1 | b512 |" if latency else ""))
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for method, fraction, results in rows:
        q = np.array([r["quality"] for r in results])
        nbytes = results[0]["bytes"]
        line = (f"| {method} | {'-' if fraction == 1 else f'1/{fraction}'} | {nbytes:,} | "
                f"{nbytes / uniform[0]['bytes']:.4f} | {q.mean():.4f} | ±{q.std():.4f} | ")
        if metric == "AUC":
            line += f"{np.mean([r['logloss'] for r in results]):.4f} | "
        step = np.mean([r["step_ms"] for r in results])
        line += (f"{'/'.join(str(r['epoch']) for r in results)} | {step:.2f} | "
                 f"{step / uniform_step:.2f} |")
        if latency:
            served = latency.get(results[0].get("export") or "")
            line += (f" {served['1'][0]:.3f} | {served['512'][0]:.2f} |" if served
                     else " - | - |")
        print(line)
    print_ranking_stability(rows, metric)
    print(flush=True)


def kendall_tau(a, b):
    """Kendall's tau between two score vectors over the same items."""
    a, b = np.asarray(a), np.asarray(b)
    i, j = np.triu_indices(len(a), 1)
    return float(np.mean(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])))


def print_ranking_stability(rows, metric):
    """Per budget: the methods' order in every seed, the seeds whose best
    method is the overall best, and the mean pairwise Kendall tau between
    the seeds' orders (1.0: the same ranking in every seed)."""
    higher_is_better = metric == "AUC"
    for fraction in sorted({f for _, f, _ in rows if f != 1}):
        cell = [(m, np.array([r["quality"] for r in res])) for m, f, res in rows
                if f == fraction]
        if len(cell) < 2:
            continue
        names = [m for m, _ in cell]
        scores = np.stack([q for _, q in cell])  # methods x seeds
        signed = scores if higher_is_better else -scores
        best = names[int(np.argmax(signed.mean(axis=1)))]
        per_seed_best = [names[int(np.argmax(signed[:, k]))] for k in range(signed.shape[1])]
        taus = [kendall_tau(signed[:, a], signed[:, b])
                for a in range(signed.shape[1]) for b in range(a + 1, signed.shape[1])]
        order = " > ".join(names[i] for i in np.argsort(-signed.mean(axis=1)))
        print(f"ranking at 1/{fraction}: {order}; best in each seed {per_seed_best} "
              f"({per_seed_best.count(best)}/{len(per_seed_best)} agree with the mean)"
              + (f"; Kendall tau between seeds {np.mean(taus):.2f} "
                 f"(min {np.min(taus):.2f})" if taus else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["synthetic", "ml100k", "criteo"],
                        choices=["synthetic", "ml100k", "criteo"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--fractions", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dim", type=int, default=16, help="MovieLens uniform dim")
    parser.add_argument("--synthetic-users", type=int, default=3000)
    parser.add_argument("--synthetic-items", type=int, default=6000)
    parser.add_argument("--synthetic-ratings", type=int, default=100_000,
                        help="few ratings per id: memory-limited, where "
                        "compression should help")
    parser.add_argument("--ml-models", nargs="+", default=["mf", "ncf"])
    parser.add_argument("--criteo-rows", type=int, default=100_000)
    parser.add_argument("--cardinality-scale", type=float, default=0.002)
    parser.add_argument("--criteo-dim", type=int, default=16)
    parser.add_argument("--serve-requests", type=int, default=200,
                        help="timed C API requests per batch size and cell (first "
                        "seed; TensorFlow backend); 0: no serving column")
    parser.add_argument("--work-dir", type=pathlib.Path, default=None,
                        help="where the exports go (default: a new temporary folder)")
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction,
                        default=False, help="XLA-compile every model (slow to "
                        "compile the hashed layers' integer graphs on CPU)")
    args = parser.parse_args()
    args.work_dir = args.work_dir or pathlib.Path(tempfile.mkdtemp(prefix="kmd_bench_"))
    if sorted(args.fractions) != args.fractions:
        args.fractions = sorted(args.fractions)
    print(f"backend {keras.backend.backend()}; argv {' '.join(sys.argv[1:])}", flush=True)
    if "synthetic" in args.parts:
        ratings = synthetic_ratings(args.synthetic_users, args.synthetic_items,
                                    args.synthetic_ratings, rank=16, seed=0)
        movielens_part(f"Synthetic MovieLens ({args.synthetic_users} users, "
                       f"{args.synthetic_items} items, {args.synthetic_ratings:,} "
                       "ratings)", ratings, ["mf"], args, args.dim)
    if "ml100k" in args.parts:
        path = SHARED / "movielens" / "ml-100k"
        if not path.is_dir():
            print(f"ml-100k skipped: {path} not found")
        else:
            movielens_part("MovieLens ml-100k", read_ratings(str(path)), args.ml_models,
                           args, args.dim)
    if "criteo" in args.parts:
        criteo_part(args)


if __name__ == "__main__":
    main()
