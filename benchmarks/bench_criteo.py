"""DLRM on synthetic Criteo: parameters, bytes, throughput and AUC per mode.

Part 1 (full Kaggle cardinalities, 33,762,577 ids): builds uniform d=16 and
per-table MD (alpha 0.3) DLRMs, prints parameters and bytes, and times
training steps (examples per second, CPU, same batch and optimizer).
Part 2 (quality, >= 1M synthetic rows with a planted signal): uniform vs MD
at 1/16 and 1/2 of the uniform embedding parameters; validation AUC.

    python benchmarks/bench_criteo.py                 # both parts
    python benchmarks/bench_criteo.py --part quality --rows 1000000
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES  # noqa: E402
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo  # noqa: E402
from keras_mixed_dim.models.dlrm import dlrm  # noqa: E402
from keras_mixed_dim.models.dlrm import embedding_layers  # noqa: E402
from keras_mixed_dim.models.dlrm import embedding_summary  # noqa: E402


def build(cardinalities, mode, dim, alpha, budget_fraction=None):
    embeddings = embedding_layers(cardinalities, dim, mode, alpha=alpha,
                                  budget_fraction=budget_fraction)
    model = dlrm(embeddings, dim, stacked=False)  # the documented layout
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    return model, embedding_summary(embeddings)


def part_scale(args):
    print(f"\n# Full Kaggle cardinalities ({sum(KAGGLE_CARDINALITIES):,} ids), "
          f"batch {args.batch}, Adam, {args.steps} timed steps, "
          f"backend {keras.backend.backend()}")
    generator = SyntheticCriteo(args.batch * (args.steps + 2), seed=0)
    dense, categorical, labels = generator.arrays()
    x = {"dense": dense, "categorical": categorical}
    print(f"{'mode':>10} {'emb params':>13} {'emb MiB':>9} {'examples/s':>11} "
          f"{'s/step':>7}")
    rates = {}
    for mode in ("uniform", "table"):
        keras.utils.set_random_seed(0)
        model, summary = build(KAGGLE_CARDINALITIES, mode, args.dim, args.alpha)
        model.fit(x, labels, batch_size=args.batch, steps_per_epoch=2, epochs=1,
                  verbose=0)  # trace, compile and allocate optimizer slots
        start = time.perf_counter()
        model.fit(x, labels, batch_size=args.batch, steps_per_epoch=args.steps,
                  epochs=1, verbose=0)
        seconds = time.perf_counter() - start
        rates[mode] = args.steps * args.batch / seconds
        print(f"{mode:>10} {summary['params']:>13,} {summary['bytes'] / 2**20:>9,.1f} "
              f"{rates[mode]:>11,.0f} {seconds / args.steps:>7.3f}", flush=True)
        del model
        keras.backend.clear_session()
    print(f"MD / uniform throughput: {rates['table'] / rates['uniform']:.2f}x")


def part_quality(args):
    cardinalities = [max(1, int(round(c * args.scale))) for c in KAGGLE_CARDINALITIES]
    print(f"\n# Quality: {args.rows:,} synthetic rows, cardinalities x {args.scale} "
          f"({sum(cardinalities):,} ids), d={args.dim}, {args.epochs} epoch(s), "
          f"batch {args.batch}")
    generator = SyntheticCriteo(args.rows, cardinalities, seed=0)
    dense, categorical, labels = generator.arrays()
    cut = int(0.9 * args.rows)
    train = ({"dense": dense[:cut], "categorical": categorical[:cut]}, labels[:cut])
    val = ({"dense": dense[cut:], "categorical": categorical[cut:]}, labels[cut:])
    uniform_params = sum(cardinalities) * args.dim
    runs = [("uniform", None, "uniform")]
    for fraction in (16, 2):
        # the bytes of every array (projections and remaps too)
        runs.append(("table", 1 / fraction, f"MD table 1/{fraction}"))
        runs.append(("table_blocks", 1 / fraction, f"MD blocks 1/{fraction}"))
    print(f"{'config':>16} {'emb params':>11} {'x fewer':>8} {'val AUC':>8} "
          f"{'logloss':>8} {'seconds':>8}")
    base_auc = None
    for mode, budget, label in runs:
        keras.utils.set_random_seed(0)
        model, summary = build(cardinalities, mode, args.dim, args.alpha, budget)
        start = time.perf_counter()
        model.fit(*train, batch_size=args.batch, epochs=args.epochs, verbose=0)
        result = model.evaluate(*val, batch_size=8192, verbose=0, return_dict=True)
        seconds = time.perf_counter() - start
        base_auc = result["auc"] if base_auc is None else base_auc
        print(f"{label:>16} {summary['params']:>11,} "
              f"{uniform_params / summary['params']:>8.1f} {result['auc']:>8.4f} "
              f"{result['loss']:>8.4f} {seconds:>8.1f}   dAUC {result['auc'] - base_auc:+.4f}",
              flush=True)
        keras.backend.clear_session()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["scale", "quality", "all"], default="all")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scale", type=float, default=0.01,
                        help="quality part: Kaggle cardinalities times this")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, keras {keras.__version__}, "
          f"{os.cpu_count()} cores")
    if args.part in ("scale", "all"):
        part_scale(args)
    if args.part in ("quality", "all"):
        part_quality(args)


if __name__ == "__main__":
    main()
