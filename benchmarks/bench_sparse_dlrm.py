"""DLRM training and predict throughput with sparse row updates, stacked or not.

At the full Kaggle cardinalities (26 tables, 33,762,577 ids; synthetic ids
from `SyntheticCriteo`), batch 2048, one id per feature, bottom MLP
13-512-256-64-16, top MLP 512-256-1 (DLRM's Kaggle configuration), each
configuration runs in its own process so its peak RSS is its own:

    python benchmarks/bench_sparse_dlrm.py                     # the full table
    python benchmarks/bench_sparse_dlrm.py --only table/sgd/stacked
    python benchmarks/bench_sparse_dlrm.py --reference /path/to/dlrm
    python benchmarks/bench_sparse_dlrm.py --table-step 1000000   # one table

Rows: embedding mode (`uniform` d=16, `table` = MD per table with DLRM's
`md_solver`, alpha 0.3), the optimizer (`sgd`, `adagrad`, `adam`: the
package's `SparseRowOptimizer` with SGD / row-wise Adagrad / lazy Adam on the
tables and Keras's SGD / Adagrad / Adam on the MLPs; `keras_*`: Keras's
optimizer on everything), and `stacked` (one `StackedEmbedding`) or not.
`predict` rows time `model.predict` of the same models. On JAX and PyTorch
the package's models differentiate the tables by the rows a batch gathers
(`enable_sparse_row_steps`); a fourth part `/keras_step` (for example
`table/sgd/per_feature/keras_step`) times Keras's own train step instead,
whose table gradients are dense.

With `--reference DIR` (a checkout of facebookresearch/dlrm; not part of
this package), the same run also times its `dlrm_s_pytorch.py` with the same
cardinalities, batch, MLPs and SGD, uniform and `--md-flag` (its own timer,
random data), for a side-by-side ratio.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BOTTOM, TOP, DIM = (512, 256, 64), (512, 256), 16
OPTIMIZERS = ("sgd", "adagrad", "adam", "keras_sgd", "keras_adagrad", "keras_adam")
LEARNING_RATES = {"sgd": 0.1, "adagrad": 0.05, "adam": 1e-3}
# Most telling first, so a run cut short still has the main comparisons.
# The uniform baseline that matches the MD layers' gather is the stacked one
# (both read only the looked-up rows); per-feature uniform rows use
# `keras.layers.Embedding`, whose `ops.take` reads the whole table.
DEFAULT_RUNS = [
    "table/sgd/per_feature", "uniform/sgd/stacked",
    "table/sgd/stacked", "table/adagrad/per_feature", "table/adam/per_feature",
    "uniform/sgd/per_feature", "table/keras_sgd/per_feature",
    "table/keras_adam/per_feature", "uniform/adagrad/stacked",
    "uniform/keras_adam/per_feature",
    "table/predict/per_feature", "uniform/predict/per_feature",
    "table/predict/stacked", "uniform/predict/stacked",
]


def make_optimizer(name):
    import keras

    from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer

    kind = name.removeprefix("keras_")
    dense = {"sgd": keras.optimizers.SGD, "adagrad": keras.optimizers.Adagrad,
             "adam": keras.optimizers.Adam}[kind](LEARNING_RATES[kind])
    if name.startswith("keras_"):
        return dense
    return SparseRowOptimizer(dense, table_optimizer=kind,
                              table_learning_rate=LEARNING_RATES[kind])


def run_one(spec, batch, steps, predict_batches):
    """Runs one configuration in this process; returns a result dict."""
    import keras

    from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES
    from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo
    from keras_mixed_dim.models.dlrm import dlrm
    from keras_mixed_dim.models.dlrm import embedding_layers

    mode, optimizer, layout, *step = spec.split("/")
    keras.utils.set_random_seed(0)
    embeddings = embedding_layers(KAGGLE_CARDINALITIES, DIM, mode, alpha=0.3)
    model = dlrm(embeddings, DIM, bottom=BOTTOM, top=TOP, stacked=layout == "stacked")
    params = sum(int(v.size if hasattr(v, "size") else 0) for v in model.weights)
    warmup = 2
    rows = batch * (max(steps, predict_batches) + warmup)
    dense, categorical, labels = SyntheticCriteo(rows, seed=0).arrays()
    x = {"dense": dense, "categorical": categorical}
    if optimizer == "predict":
        model.predict(x, batch_size=batch, steps=warmup, verbose=0)
        start = time.perf_counter()
        model.predict(x, batch_size=batch, steps=predict_batches, verbose=0)
        seconds = time.perf_counter() - start
        timed = predict_batches
    else:
        if step == ["keras_step"]:
            # Keras's own train step: on JAX and PyTorch, dense table gradients
            model.train_step = keras.Model.train_step.__get__(model)
        model.compile(make_optimizer(optimizer), "binary_crossentropy")
        # trace, compile and allocate the optimizer's slots
        model.fit(x, labels, batch_size=batch, steps_per_epoch=warmup, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(x, labels, batch_size=batch, steps_per_epoch=steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - start
        timed = steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"spec": spec, "examples_per_s": timed * batch / seconds,
            "ms_per_step": 1e3 * seconds / timed, "peak_rss_gib": peak,
            "params": params, "steps": timed}


def table_step(rows, batch, repeats=3, steps=5):
    """ms per `train_on_batch` of one `rows x 16` Embedding and a Dense(1),
    per optimizer: what a table costs per step, apart from the DLRM."""
    import keras
    import numpy as np

    ids = np.random.default_rng(0).integers(0, rows, (batch, 1)).astype("int32")
    y = np.ones((batch, 1), "float32")
    print(f"# one {rows:,} x 16 Embedding + Dense(1), batch {batch}, "
          f"backend {keras.backend.backend()}: ms per train_on_batch (best of {repeats})")
    # Keras's default on a CPU-only machine: no XLA
    for jit in (False,):
        for name in OPTIMIZERS:
            inputs = keras.Input((1,), dtype="int32")
            outputs = keras.layers.Dense(1)(keras.layers.Flatten()(
                keras.layers.Embedding(rows, 16)(inputs)))
            model = keras.Model(inputs, outputs)
            model.compile(make_optimizer(name), "mse", jit_compile=jit)
            model.train_on_batch(ids, y)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(steps):
                    model.train_on_batch(ids, y)
                best = min(best, (time.perf_counter() - start) / steps)
            print(f"{name:>14} jit_compile={jit!s:<5} {1e3 * best:9.2f} ms", flush=True)
            del model
            keras.backend.clear_session()


def run_reference(directory, md, batch, steps):
    """facebookresearch/dlrm's `dlrm_s_pytorch.py`, same shapes, SGD."""
    from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES

    stubs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_reference_stubs")
    command = [
        sys.executable, os.path.join(stubs, "run_reference.py"),
        os.path.join(directory, "dlrm_s_pytorch.py"),
        f"--arch-sparse-feature-size={DIM}",
        f"--arch-mlp-bot=13-{'-'.join(map(str, BOTTOM))}-{DIM}",
        f"--arch-mlp-top={'-'.join(map(str, TOP))}-1",
        f"--arch-embedding-size={'-'.join(map(str, KAGGLE_CARDINALITIES))}",
        "--data-generation=random", f"--num-batches={steps + 2}",
        f"--mini-batch-size={batch}", "--num-indices-per-lookup=1",
        "--num-indices-per-lookup-fixed=True", "--print-freq=2",
        "--print-time", f"--learning-rate={LEARNING_RATES['sgd']}", "--optimizer=sgd",
    ] + (["--md-flag", "--md-temperature=0.3", "--md-threshold=0"] if md else [])
    env = dict(os.environ, PYTHONPATH=f"{stubs}{os.pathsep}{directory}")
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env,
                            cwd=directory, check=False)
    wall = time.perf_counter() - start
    # "Finished training it N/M of epoch 0, X ms/it, loss ..."
    times = re.findall(r"([0-9.]+) ms/it", result.stdout)
    if result.returncode or not times:
        return {"spec": f"reference/{'md' if md else 'uniform'}", "error":
                (result.stdout + result.stderr)[-800:]}
    # each print averages the last 2 iterations; the first includes warm-up
    ms = sum(float(t) for t in times[1:]) / len(times[1:])
    return {"spec": f"reference/{'md' if md else 'uniform'}/sgd",
            "examples_per_s": batch / (ms / 1e3), "ms_per_step": ms, "wall_s": wall,
            "steps": 2 * len(times[1:])}


def child(spec, args):
    if spec.startswith("reference/"):
        result = run_reference(args.reference, spec.split("/")[1] == "md", args.batch,
                               args.steps)
    else:
        steps = args.dense_steps if "/keras_" in spec else args.steps
        result = run_one(spec, args.batch, steps, args.predict_batches)
    print("RESULT " + json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=12, help="timed sparse steps")
    parser.add_argument("--dense-steps", type=int, default=4,
                        help="timed steps of Keras's dense optimizers (slow)")
    parser.add_argument("--predict-batches", type=int, default=12)
    parser.add_argument("--only", nargs="*", help="run these specs (mode/opt/layout)")
    parser.add_argument("--reference", help="a facebookresearch/dlrm checkout")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--table-step", type=int, metavar="ROWS",
                        help="only time one ROWS x 16 table's train step per optimizer")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args)
    if args.table_step:
        return table_step(args.table_step, args.batch)
    specs = args.only or DEFAULT_RUNS
    if args.reference and not args.only:
        # next to the runs they are compared with
        specs = specs[:2] + ["reference/md", "reference/uniform"] + specs[2:]
    import keras

    print(f"# DLRM, Kaggle cardinalities, batch {args.batch}, backend "
          f"{keras.backend.backend()}, {os.cpu_count()} CPUs; one process per row")
    print(f"{'mode/optimizer/layout':>32} {'examples/s':>11} {'ms/step':>9} "
          f"{'peak RSS GiB':>12} {'steps':>5}", flush=True)
    results = []
    for spec in specs:
        command = [sys.executable, __file__, "--child", spec, "--batch", str(args.batch),
                   "--steps", str(args.steps), "--dense-steps", str(args.dense_steps),
                   "--predict-batches", str(args.predict_batches)]
        if args.reference:
            command += ["--reference", args.reference]
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [l for l in output.stdout.splitlines() if l.startswith("RESULT ")]
        if not lines:
            print(f"{spec:>32} failed: {(output.stderr or output.stdout)[-600:]}",
                  flush=True)
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        results.append(result)
        if "error" in result:
            print(f"{spec:>32} failed: {result['error']}", flush=True)
            continue
        rss = result.get("peak_rss_gib")
        print(f"{spec:>32} {result['examples_per_s']:>11,.0f} "
              f"{result['ms_per_step']:>9.1f} "
              f"{'' if rss is None else f'{rss:.2f}':>12} {result['steps']:>5}",
              flush=True)
    rates = {r["spec"]: r["examples_per_s"] for r in results if "error" not in r}
    ratios = [
        ("MD / uniform stacked, sparse SGD", "table/sgd/per_feature",
         "uniform/sgd/stacked"),
        ("MD / uniform, sparse SGD", "table/sgd/per_feature", "uniform/sgd/per_feature"),
        ("MD / uniform, sparse SGD, stacked", "table/sgd/stacked", "uniform/sgd/stacked"),
        ("MD adagrad / MD SGD", "table/adagrad/per_feature", "table/sgd/per_feature"),
        ("MD adam / MD SGD", "table/adam/per_feature", "table/sgd/per_feature"),
        ("MD sparse SGD / Keras SGD", "table/sgd/per_feature", "table/keras_sgd/per_feature"),
        ("uniform sparse SGD / Keras SGD", "uniform/sgd/per_feature",
         "uniform/keras_sgd/per_feature"),
        ("MD sparse Adam / Keras Adam", "table/adam/per_feature",
         "table/keras_adam/per_feature"),
        ("uniform sparse Adam / Keras Adam", "uniform/adam/per_feature",
         "uniform/keras_adam/per_feature"),
        ("MD stacked / per feature, SGD", "table/sgd/stacked", "table/sgd/per_feature"),
        ("uniform stacked / per feature, SGD", "uniform/sgd/stacked",
         "uniform/sgd/per_feature"),
        ("predict MD / uniform", "table/predict/per_feature", "uniform/predict/per_feature"),
        ("predict MD / uniform, stacked", "table/predict/stacked", "uniform/predict/stacked"),
        ("our MD / reference MD, SGD", "table/sgd/per_feature", "reference/md/sgd"),
        ("our MD stacked / reference MD, SGD", "table/sgd/stacked", "reference/md/sgd"),
        ("our uniform / reference uniform, SGD", "uniform/sgd/per_feature",
         "reference/uniform/sgd"),
        ("our uniform stacked / reference uniform, SGD", "uniform/sgd/stacked",
         "reference/uniform/sgd"),
        ("uniform sparse Adagrad / sparse SGD, stacked", "uniform/adagrad/stacked",
         "uniform/sgd/stacked"),
        ("MD row step / Keras step, sparse SGD", "table/sgd/per_feature",
         "table/sgd/per_feature/keras_step"),
        ("MD row step / Keras step, lazy Adam", "table/adam/per_feature",
         "table/adam/per_feature/keras_step"),
        ("uniform stacked row step / Keras step, SGD", "uniform/sgd/stacked",
         "uniform/sgd/stacked/keras_step"),
    ]
    print()
    for label, a, b in ratios:
        if a in rates and b in rates:
            print(f"{label:>40}: {rates[a] / rates[b]:.2f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    sys.exit(main())
