"""Converting trained uniform models to mixed-dimension ones: quality and cost.

    python benchmarks/bench_compress.py [--sections movielens,criteo,big]
        [--data /work/shared/data/movielens/ml-100k] [--seeds 1] [--epochs 20]
        [--fractions 4,8,16,32] [--criteo-rows 200000] [--big-rows 10000000]

movielens: MF and NCF with uniform d=64 tables trained on ml-100k (random
80/10/10 split, Adam, early stopping on validation MSE), then converted with
`compress_model` at 1/4 .. 1/32 of the embedding bytes (user and item tables;
the per-id biases are left alone), then fine-tuned for one epoch (kept only
if the validation MSE improved: "at most one epoch"), then int8 tables.
Prints test MSE. criteo: a DLRM with uniform d=16 tables on Criteo-like
synthetic rows (cardinalities capped at --criteo-cap), same conversions,
validation AUC. big: the cost of converting one 10M x 64 table (seconds and
tracemalloc peak beyond the table), exact against sketched.
"""

import argparse
import os
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# On a shared 2-core machine multithreaded OpenBLAS spins against the other
# load and runs ~15x slower than one thread; override to measure otherwise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def auc(labels, scores):
    """ROC AUC from ranks (ties averaged)."""
    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size)
    sorted_scores = scores[order]
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    stops = np.concatenate([boundaries, [scores.size]])
    for start, stop in zip(starts, stops):
        ranks[order[start:stop]] = 0.5 * (start + stop - 1) + 1
    positives = labels.sum()
    negatives = labels.size - positives
    return float((ranks[labels].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def movielens(args):
    import keras

    from keras_mixed_dim.compress import compress_model
    from keras_mixed_dim.compress import quantize_model
    from keras_mixed_dim.datasets import Vocabulary
    from keras_mixed_dim.datasets.movielens import read_ratings
    from keras_mixed_dim.datasets.movielens.ratings import split_random
    from keras_mixed_dim.models import matrix_factorization
    from keras_mixed_dim.models import neural_cf

    ratings = read_ratings(args.data)
    fractions = [int(f) for f in args.fractions.split(",")]
    print(f"\nMovieLens {args.data}: {len(ratings):,} ratings, uniform d={args.dim}, "
          f"seeds {args.seeds}, test MSE (mean over seeds)")

    def mse(model, part):
        prediction = model.predict(part[0], batch_size=8192, verbose=0).reshape(-1)
        return float(np.mean((prediction - part[1]) ** 2))

    for kind in args.models.split(","):
        rows = {}
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            parts = split_random(len(ratings), 0.1, 0.1, seed=seed)
            train_raw = ratings.subset(parts[0])
            users = Vocabulary.from_values(train_raw.users)
            items = Vocabulary.from_values(train_raw.items)

            def encode(index):
                part = ratings.subset(index)
                return ({"user": users.lookup(part.users),
                         "item": items.lookup(part.items)}, part.ratings)

            train, val, test = (encode(index) for index in parts)
            mean = float(np.mean(train[1]))
            layers = [keras.layers.Embedding(users.size, args.dim, name="user_embedding"),
                      keras.layers.Embedding(items.size, args.dim, name="item_embedding")]
            if kind == "mf":
                model = matrix_factorization(users.size, items.size, *layers,
                                             global_mean=mean)
            else:
                model = neural_cf(*layers, global_mean=mean)
            model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="mse")
            started = time.perf_counter()
            model.fit(train[0], train[1], validation_data=val, epochs=args.epochs,
                      batch_size=args.batch_size, verbose=0, callbacks=[
                          keras.callbacks.EarlyStopping(patience=2,
                                                        restore_best_weights=True)])
            train_seconds = time.perf_counter() - started
            counts = {"user_embedding": users.index_counts,
                      "item_embedding": items.index_counts}
            rows.setdefault("original", []).append((mse(model, test), 1.0, 0.0))
            for fraction in fractions:
                started = time.perf_counter()
                small, report = compress_model(model, counts, budget_fraction=1.0 / fraction,
                                               min_rows=100)
                convert_seconds = time.perf_counter() - started
                ratio = report.bytes_after / report.bytes_before
                converted = mse(small, test)
                small.compile(optimizer=keras.optimizers.Adam(args.lr), loss="mse")
                before_val = mse(small, val)
                saved = [w.copy() for w in small.get_weights()]
                small.fit(train[0], train[1], epochs=args.fine_tune_epochs,
                          batch_size=args.batch_size, verbose=0)
                tuned_test = mse(small, test)
                if mse(small, val) > before_val:
                    small.set_weights(saved)  # "at most one epoch": keep the better
                kept = mse(small, test)
                quantized, q_report = quantize_model(small, "int8")
                int8 = mse(quantized, test)
                q_ratio = q_report.bytes_after / report.bytes_before
                rows.setdefault(fraction, []).append(
                    (converted, ratio, convert_seconds, tuned_test, kept, int8, q_ratio))
            print(f"  {kind} seed {seed}: trained in {train_seconds:.0f} s, "
                  f"original test MSE {rows['original'][-1][0]:.4f}")
        original = np.mean([r[0] for r in rows["original"]])
        print(f"{kind}: original test MSE {original:.4f}")
        print(f"{'bytes':>7} {'ratio':>7} {'convert s':>9} {'converted':>10} "
              f"{'+1 epoch':>9} {'kept':>8} {'vs orig':>8} {'int8':>8} "
              f"{'int8 vs kept':>12} {'int8 ratio':>10}")
        for fraction in fractions:
            values = np.mean(np.array(rows[fraction]), axis=0)
            converted, ratio, seconds, tuned, kept, int8, q_ratio = values
            print(f"{'1/' + str(fraction):>7} {ratio:7.4f} {seconds:9.2f} "
                  f"{converted:10.4f} {tuned:9.4f} {kept:8.4f} "
                  f"{100 * (kept / original - 1):+7.2f}% {int8:8.4f} "
                  f"{100 * (int8 / kept - 1):+11.3f}% {q_ratio:10.4f}")


def criteo(args):
    import keras

    from keras_mixed_dim.compress import compress_model
    from keras_mixed_dim.compress import quantize_model
    from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES
    from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo
    from keras_mixed_dim.models.dlrm import dlrm

    cardinalities = [min(c, args.criteo_cap) for c in KAGGLE_CARDINALITIES]
    fractions = [int(f) for f in args.fractions.split(",")]
    print(f"\nCriteo-like synthetic DLRM: {args.criteo_rows:,} training rows, "
          f"cardinalities capped at {args.criteo_cap:,}, uniform d=16; "
          "validation AUC (mean over seeds)")

    def predict(model, part):
        return model.predict({"dense": part[0], "categorical": part[1]},
                             batch_size=8192, verbose=0)

    results = {}
    for seed in range(args.seeds):
        keras.utils.set_random_seed(seed)
        train = SyntheticCriteo(args.criteo_rows, cardinalities, seed=seed).arrays()
        val = SyntheticCriteo(args.criteo_rows // 4, cardinalities,
                              seed=seed + 100).arrays()
        embeddings = [keras.layers.Embedding(c, 16, name=f"embedding_{f}")
                      for f, c in enumerate(cardinalities)]
        model = dlrm(embeddings, 16, bottom=(64, 32), top=(64, 32),
                     stacked=False)  # the documented layout
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
        x = {"dense": train[0], "categorical": train[1]}
        started = time.perf_counter()
        model.fit(x, train[2], epochs=args.criteo_epochs, batch_size=512, verbose=0)
        print(f"  seed {seed}: trained in {time.perf_counter() - started:.0f} s")
        counts = {f"embedding_{f}": np.bincount(train[1][:, f], minlength=c)
                  for f, c in enumerate(cardinalities)}
        results.setdefault("original", []).append(auc(val[2], predict(model, val)))
        for fraction in fractions:
            # synthetic ids are ranked by construction (as a frequency-ranked
            # vocabulary's are), so no id -> rank table is stored
            try:
                small, report = compress_model(model, counts, budget_fraction=1.0 / fraction,
                                               min_rows=1000, keep_id_order=True)
            except ValueError as error:  # below one float per id plus projections
                print(f"  1/{fraction}: infeasible: {error}")
                results.setdefault(fraction, [])
                continue
            converted = auc(val[2], predict(small, val))
            small.compile(optimizer=keras.optimizers.Adam(1e-3),
                          loss="binary_crossentropy")
            small.fit(x, train[2], epochs=args.fine_tune_epochs, batch_size=512,
                      verbose=0)
            tuned = auc(val[2], predict(small, val))
            quantized, q_report = quantize_model(small, "int8")
            int8 = auc(val[2], predict(quantized, val))
            results.setdefault(fraction, []).append(
                (report.bytes_after / report.bytes_before, converted, tuned, int8,
                 q_report.bytes_after / report.bytes_before, len(report.layers)))
            print(f"  1/{fraction}: AUC converted {converted:.4f}, +1 epoch "
                  f"{tuned:.4f}, int8 {int8:.4f}", flush=True)
    original = np.mean(results["original"])
    print(f"original AUC {original:.4f}")
    print(f"{'bytes':>7} {'ratio':>7} {'tables':>6} {'converted':>10} {'+1 epoch':>9} "
          f"{'vs orig':>8} {'int8':>8} {'int8 vs +1':>10} {'int8 ratio':>10}")
    for fraction in fractions:
        if not results[fraction]:
            continue
        ratio, converted, tuned, int8, q_ratio, tables = np.mean(
            np.array(results[fraction]), axis=0)
        print(f"{'1/' + str(fraction):>7} {ratio:7.4f} {int(tables):>6} {converted:10.4f} "
              f"{tuned:9.4f} {tuned - original:+8.4f} {int8:8.4f} "
              f"{int8 - tuned:+10.4f} {q_ratio:10.4f}")


def big(args):
    from keras_mixed_dim.compress import convert_weights

    rows, dim = args.big_rows, 64
    rng = np.random.default_rng(0)
    print(f"\nConverting one {rows:,} x {dim} float32 table "
          f"({rows * dim * 4 / 2**30:.2f} GiB) at 1/8 of its bytes")
    weights = np.empty((rows, dim), np.float32)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    spectrum = np.geomspace(1.0, 0.05, dim).astype(np.float32)
    for start in range(0, rows, 1 << 20):
        stop = min(start + (1 << 20), rows)
        weights[start:stop] = (rng.standard_normal((stop - start, dim), np.float32)
                               * spectrum) @ basis.T
    counts = rng.permutation(1.0 / np.arange(1, rows + 1) ** 1.05)
    print(f"{'method':>10} {'seconds':>8} {'peak GiB':>9} {'rel. error':>10} "
          f"{'weighted':>9} {'sketched blocks':>15}")
    for label, sketch in (("exact", None), ("sketched", "osnap")):
        tracemalloc.start()
        started = time.perf_counter()
        converted = convert_weights(weights, counts, budget_fraction=0.125, sketch=sketch)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        report = converted.report
        sketched = [i for i, b in enumerate(report.blocks) if b.sketched]
        print(f"{label:>10} {seconds:8.1f} {peak / 2**30:9.2f} "
              f"{report.relative_error:10.4f} {report.weighted_error:9.4f} "
              f"{str(sketched):>15}")
        del converted
    print("peak: tracemalloc peak of the conversion, excluding the table itself "
          "(it includes the counts copy, the ranking and the new tables)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="movielens,criteo,big")
    parser.add_argument("--data", default="/work/shared/data/movielens/ml-100k")
    parser.add_argument("--models", default="mf,ncf")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--fine-tune-epochs", type=int, default=1)
    parser.add_argument("--fractions", default="4,8,16,32")
    parser.add_argument("--criteo-rows", type=int, default=200_000)
    parser.add_argument("--criteo-cap", type=int, default=20_000)
    parser.add_argument("--criteo-epochs", type=int, default=1)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    args = parser.parse_args()
    sections = args.sections.split(",")
    if "big" in sections:
        big(args)  # first, before Keras holds memory
    if "movielens" in sections:
        movielens(args)
    if "criteo" in sections:
        criteo(args)


if __name__ == "__main__":
    main()
