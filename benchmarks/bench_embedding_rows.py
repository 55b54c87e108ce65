"""Row updates of plain `keras.layers.Embedding` tables against Keras's dense
step, on TensorFlow, JAX and PyTorch, interleaved pair by pair in one run.

A DLRM of one `keras.layers.Embedding` per Criteo feature (the Kaggle
cardinalities times `--scale`, so that a worker stays near 2 GiB; d=16,
batch 2048, one id per feature, bottom MLP 13-512-256-64-16, top MLP
512-256-1, dot interaction, binary cross-entropy, SGD 0.1 on everything,
the same `SyntheticCriteo` rows), trained two ways per backend:

* `<backend>/rows`: the package's way, `dlrm(..., stacked=False)` (an
  `IdSafeModel`, which reads the tables through
  `keras_mixed_dim.models.read_embedding_rows`) with
  `SparseRowOptimizer(SGD(0.1), "sgd", table_learning_rate=0.1)`: only the
  looked-up rows are read and written, on every backend.
* `<backend>/dense`: what plain Keras does with the same layers and
  weights: a `keras.Model` on them with Keras's `Embedding.call` and
  `keras.optimizers.SGD(0.1)` in Keras's own train step.

Each configuration runs in its own worker process (one backend's pair
alive at a time); the parent has the two time a few `model.fit` steps in
turn, round after round, the order reversed every other round, and each
ratio is the median over the rounds of two measurements made seconds
apart, so it holds on a busy machine where absolute examples/s do not.

    python benchmarks/bench_embedding_rows.py
    python benchmarks/bench_embedding_rows.py --backends torch --rounds 3 --scale 0.05
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interleaved  # noqa: E402  (benchmarks/interleaved.py)
from timed_fit import BATCH, BOTTOM, DIM, LR, TOP, fit_timed  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA_STEPS = 16
BACKENDS = ("tf", "jax", "torch")


def cardinalities(scale):
    from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES

    return [max(1, int(round(c * scale))) for c in KAGGLE_CARDINALITIES]


def make_data(path, scale):
    import numpy as np

    from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo

    cards = cardinalities(scale)
    dense, categorical, labels = SyntheticCriteo(BATCH * DATA_STEPS, cards, seed=0).arrays()
    np.savez(path, dense=dense, categorical=categorical, labels=labels,
             cardinalities=np.array(cards))


class Trainer:
    """One model, built, compiled and warmed up; `run(steps)` times `fit`."""

    def __init__(self, way, data):
        import keras

        from keras_mixed_dim.models import IdSafeModel
        from keras_mixed_dim.models.dlrm import dlrm
        from keras_mixed_dim.optimizers import SparseRowOptimizer

        sys.path.insert(0, os.path.join(ROOT, "examples"))
        from common.metering import ThroughputMeter  # examples/common

        keras.utils.set_random_seed(0)
        cards = [int(c) for c in data["cardinalities"]]
        tables = [keras.layers.Embedding(rows, DIM, name=f"embedding_{f}")
                  for f, rows in enumerate(cards)]
        model = dlrm(tables, DIM, bottom=BOTTOM, top=TOP, stacked=False)
        assert isinstance(model, IdSafeModel)
        if way == "rows":
            optimizer = SparseRowOptimizer(keras.optimizers.SGD(LR), "sgd",
                                           table_learning_rate=LR)
        else:
            for layer in tables:
                # Keras's own lookup (`read_embedding_rows` set `call` on
                # the instance), in a plain model: Keras's own train step
                del layer.call
            model = keras.Model(model.inputs, model.outputs)
            optimizer = keras.optimizers.SGD(LR)
        model.compile(optimizer, "binary_crossentropy")
        self.model = model
        self.x = {"dense": data["dense"], "categorical": data["categorical"]}
        self.y = data["labels"]
        self.meter = ThroughputMeter(BATCH)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.run(2)
        fallback = [str(w.message) for w in caught if "dense gradient" in str(w.message)]
        if way == "rows" and fallback:
            # the row path must not fall back to a table-sized gradient
            raise RuntimeError(fallback[0])

    def run(self, steps):
        return fit_timed(self.model, self.x, self.y, self.meter, steps)


def worker(spec, data_path):
    import numpy as np

    with np.load(data_path) as data:
        trainer = Trainer(spec.split("/")[1], {k: data[k] for k in data.files})
    interleaved.serve(trainer)


def run_pair(backend, args, data_path, log):
    return interleaved.take_turns(
        [f"{backend}/rows", f"{backend}/dense"],
        lambda spec: [sys.executable, os.path.abspath(__file__), "--worker", spec,
                      "--data", data_path],
        BATCH, args.rounds, args.steps, log)

def report(results):
    print(f"\n{'backend':>8} {'rows ex/s':>10} {'dense ex/s':>11} {'rows / dense':>13} "
          f"{'min':>6} {'max':>6} {'RSS rows':>9} {'RSS dense':>10}")
    for backend, (rounds, info) in results.items():
        rows, dense = f"{backend}/rows", f"{backend}/dense"
        ratios = [r[rows] / r[dense] for r in rounds]
        print(f"{backend:>8} {statistics.median(r[rows] for r in rounds):>10,.0f} "
              f"{statistics.median(r[dense] for r in rounds):>11,.0f} "
              f"{statistics.median(ratios):>12.2f}x {min(ratios):>5.2f}x "
              f"{max(ratios):>5.2f}x {info[rows]['peak_rss_gib']:>8.2f}G "
              f"{info[dense]['peak_rss_gib']:>9.2f}G")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS),
                        choices=list(BACKENDS))
    parser.add_argument("--scale", type=float, default=0.1,
                        help="the Kaggle cardinalities times this")
    parser.add_argument("--rounds", type=int, default=5, help="ratios: median of these")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per turn")
    parser.add_argument("--log", default=os.devnull, help="the workers' stderr")
    parser.add_argument("--json", help="also write every round's figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--make-data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_data:
        return make_data(args.make_data, args.scale)
    if args.worker:
        return worker(args.worker, args.data)
    print(f"# DLRM of keras.layers.Embedding tables (Kaggle cardinalities x {args.scale}), "
          f"batch {BATCH}, SGD lr {LR}; {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as folder, open(args.log, "a",
                                                        encoding="utf-8") as log:
        data_path = os.path.join(folder, "rows.npz")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--make-data",
                        data_path, "--scale", str(args.scale)], check=True,
                       env=interleaved.environment("jax"), stderr=log)
        import numpy as np

        with np.load(data_path) as data:
            cards = data["cardinalities"]
        print(f"# {len(cards)} tables, {int(cards.sum()):,} rows, "
              f"{int(cards.sum()) * DIM * 4 / 2**20:,.0f} MiB of float32", flush=True)
        for backend in args.backends:
            print(f"# {backend}: starting", flush=True)
            results[backend] = run_pair(backend, args, data_path, log)
    report(results)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({b: {"rounds": r, "workers": i} for b, (r, i) in results.items()},
                      file, indent=1)


if __name__ == "__main__":
    sys.exit(main())
