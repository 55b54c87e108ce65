"""A preset DLRM end to end on one machine: plan, build, train with sparse
row updates, checkpoint and resume, save `.keras`, export for TF Serving,
and check the export through the TensorFlow C API against `predict`.

    python examples/dlrm_scale.py --preset mlperf-dcnv2 --embedding table \\
        --budget-fraction 1/16 --steps 20 --out runs/mlperf          # full size: 204M ids
    python examples/dlrm_scale.py --scale 1000 --steps 4 --out /tmp/small

Prints the bytes of every part (tables, projections, remaps, optimizer
slots, dense layers), the wall time and peak RSS of every phase, and the
training examples/s; `--results-json` writes them. Bad settings (an unknown
preset or kind, a budget below the smallest plan) fail before anything is
allocated. Every phase longer than 10 s prints a heartbeat or a progress bar.
"""

import argparse
import contextlib
import gc
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from common.phases import Phases  # noqa: E402
from keras_mixed_dim.datasets.criteo.streaming import StreamingCriteo  # noqa: E402
from keras_mixed_dim.io_utils import atomic_save_model  # noqa: E402
from keras_mixed_dim.io_utils import atomic_write_json  # noqa: E402
from keras_mixed_dim.io_utils import load_model_file  # noqa: E402
from keras_mixed_dim.models.presets import PRESETS  # noqa: E402
from keras_mixed_dim.models.presets import get_preset  # noqa: E402
from keras_mixed_dim.models.scale import COUNTED_KINDS  # noqa: E402
from keras_mixed_dim.models.scale import SCALE_KINDS  # noqa: E402
from keras_mixed_dim.models.scale import check_settings  # noqa: E402
from keras_mixed_dim.models.scale import host_initialized  # noqa: E402
from keras_mixed_dim.models.scale import part_bytes  # noqa: E402
from keras_mixed_dim.models.scale import preset_embeddings  # noqa: E402
from keras_mixed_dim.models.scale import scale_kind  # noqa: E402
from keras_mixed_dim.models.scale import preset_model  # noqa: E402
from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer  # noqa: E402

GIB = 2**30
HERE = pathlib.Path(__file__).resolve().parent
PHASES = ("plan", "build", "train", "checkpoint", "resume", "train_resumed", "save",
          "export", "serving_check")
PARTS = ("tables", "projections", "remaps", "table_slots", "dense", "dense_slots",
         "total")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", default="mlperf-dcnv2", help=f"one of {PRESETS}")
    parser.add_argument("--scale", type=float, default=1,
                        help="divide every cardinality by this (1000: a small twin)")
    parser.add_argument("--embedding", default="table", help=f"one of {SCALE_KINDS}")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-fraction", default="1/16",
                        help="embedding bytes as a fraction of the uniform tables' "
                        "bytes, every array counted")
    budget.add_argument("--budget", help="deprecated (removed in 0.4.0): the same "
                        "as --budget-fraction")
    parser.add_argument("--stacked", action="store_true",
                        help="all tables in one StackedEmbedding (fewer gathers; its "
                        "largest variable holds all the big tables, and Keras's "
                        "save, load and initializers copy a variable whole)")
    parser.add_argument("--one-hot", action="store_true",
                        help="one id per feature instead of the preset's bags")
    parser.add_argument("--steps", type=int, default=8,
                        help="train steps in all; a checkpoint is written and "
                        "resumed from after half of them")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=0.004,
                        help="Adagrad learning rate (MLPs and tables)")
    parser.add_argument("--plan-batches", type=int, default=64,
                        help="batches the sampling pass counts (block, md_qr)")
    parser.add_argument("--check-batches", type=int, default=3,
                        help="batches the C API answers are compared on")
    parser.add_argument("--serving-requests", type=int, default=30)
    parser.add_argument("--no-serving", action="store_true",
                        help="stop after the .keras save (no export, no C API check)")
    parser.add_argument("--stop-after", choices=("train", "all"), default="all",
                        help="train: stop after the first half of the steps (no "
                        "checkpoint, save, export; for a memory-bound rehearsal)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=("first", "second"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help="folder for the checkpoint, model and export "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--results-json")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    if args.budget is not None:
        warnings.warn("--budget is deprecated and will be removed in 0.4.0: it is "
                      "--budget-fraction (a fraction of the uniform tables' bytes).",
                      DeprecationWarning, stacklevel=2)
        args.budget_fraction = args.budget
    if args.embedding == "block":
        # deprecated name of "table_blocks" (warns)
        args.embedding = scale_kind(args.embedding)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.steps < 2:
        parser.error(f"--steps must be >= 2 (a checkpoint after half), got {args.steps}")
    return args


@contextlib.contextmanager
def weights_through_disk():
    """Makes Keras write and read a `.keras` file's weights through a file
    beside it rather than a copy in memory.

    Keras 3 holds all the weights in an in-memory buffer when they fit in
    half of the free memory, which at this scale doubles the model's
    footprint for the save or the load; the file path (its own fallback for
    large models) streams them one variable at a time."""
    from keras.src.saving import saving_lib

    check = getattr(saving_lib, "is_memory_sufficient", None)
    if check is None:  # another Keras: leave its choice alone
        yield
        return
    saving_lib.is_memory_sufficient = lambda model: False
    try:
        yield
    finally:
        saving_lib.is_memory_sufficient = check


def make_optimizer(lr):
    """Adagrad for the MLPs; row-wise Adagrad on the touched table rows."""
    return SparseRowOptimizer(keras.optimizers.Adagrad(lr), table_optimizer="adagrad")


def compile_model(model, lr):
    model.compile(optimizer=make_optimizer(lr), loss="binary_crossentropy")
    return model


def build_model(config, kind, budget_bytes, counts=None, lr=0.004, seed=0,
                embeddings=None, stacked=False):
    """The compiled model with its optimizer slots created (on `embeddings`,
    unbuilt layers of `preset_embeddings`, when given)."""
    if embeddings is None:
        embeddings = preset_embeddings(config, kind, budget_bytes, counts=counts,
                                       seed=seed)
    # tables drawn by numpy in place (see HostUniform): a lower build peak
    model = preset_model(config, host_initialized(embeddings, seed),
                         stacked=None if stacked else False)
    model = compile_model(model, lr)
    model.optimizer.build(model.trainable_variables)
    return model


def train(model, data, start, steps, verbose=1):
    """Trains on batches `start .. start + steps - 1`; returns examples/s
    over every step but the first (tracing and compiling)."""
    times = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            times.append(time.perf_counter())

        def on_train_end(self, logs=None):
            for value in (logs or {}).values():
                float(keras.ops.convert_to_numpy(value))
            times.append(time.perf_counter())

    history = model.fit(data.dataset(steps, start), epochs=1, verbose=verbose,
                        callbacks=[Clock()], shuffle=False)
    timed = len(times) - 2
    rate = (timed * data.batch_size / (times[-1] - times[1])) if timed > 0 else float("nan")
    return rate, [float(x) for x in history.history["loss"]]


def reference_batches(model, data, count, first):
    """`predict` on `count` batches after the training data (the C API's answers
    must match)."""
    inputs, expected = {}, {}
    for k in range(count):
        features, _ = data.batch(first + k)
        expected[str(k)] = model.predict(features, batch_size=data.batch_size, verbose=0)
        for name, value in features.items():
            inputs[f"{k}/{name}"] = value
    return inputs, expected


def count_ops(model, inputs):
    """Scheduled ops of the model's inference graph (constants, placeholders
    and variable reads left out), as benchmarks/bench_export.py counts them."""
    import tensorflow as tf

    specs = {k: tf.TensorSpec((None, *v.shape[1:]), v.dtype) for k, v in inputs.items()}
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        specs).graph
    skipped = {"Placeholder", "Const", "NoOp", "Identity", "ReadVariableOp"}
    return sum(op.type not in skipped for op in graph.get_operations())


def run(args):
    started = time.perf_counter()
    phases = Phases()
    # every setting checked before anything of the model's size exists
    try:
        config = get_preset(args.preset, args.scale)
        if args.one_hot:
            config = config.one_hot()
        budget_bytes = check_settings(config, args.embedding, args.budget_fraction)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if keras.backend.backend() != "tensorflow" and not args.no_serving:
        raise SystemExit("error: the export needs KERAS_BACKEND=tensorflow "
                         "(or pass --no-serving)")
    keras.utils.set_random_seed(args.seed)
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="dlrm-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    data = StreamingCriteo(config.cardinalities, args.batch_size,
                           multi_hot_sizes=config.bag_sizes,
                           num_dense=config.num_dense, seed=args.seed)
    if args.part is None:
        print(f"{config.name} at scale 1/{config.scale:g}: {config.num_features} tables, "
              f"{config.total_rows:,} ids, uniform tables "
              f"{config.uniform_table_bytes / GIB:.2f} GiB; {args.embedding} at "
              f"{args.budget_fraction} = {budget_bytes / GIB:.3f} GiB", flush=True)
    if args.part is None and args.stop_after == "all":
        return run_parts(args, out, started)
    if args.part == "second":
        return second_part(args, config, data, out, phases, started)

    with phases("plan"):
        counts = None
        if args.embedding in COUNTED_KINDS:
            sampled = data.planning_counts(args.plan_batches, progress=args.verbose > 0)
            # the stream's ids are frequency ranks (as the package's Criteo
            # vocabularies number them): the planner gets the counts in rank
            # order, one sort per table, and stores no id remap
            counts = [np.sort(c)[::-1] for c in sampled]
            del sampled
        # unbuilt layers: a plan over the budget fails here, before building
        try:
            embeddings = preset_embeddings(config, args.embedding, budget_bytes,
                                           counts=counts, seed=args.seed)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        del counts
    with phases("build"):
        model = build_model(config, args.embedding, budget_bytes, lr=args.lr,
                            embeddings=embeddings, stacked=args.stacked)
        del embeddings
    parts = part_bytes(model, model.optimizer)
    print("bytes: " + ", ".join(f"{k} {v / GIB:.3f} GiB" for k, v in parts.items()),
          flush=True)

    first_half = args.steps // 2
    with phases("train"):
        rate, losses = train(model, data, 0, first_half, args.verbose)
    results = {
        "preset": config.name, "scale": config.scale, "embedding": args.embedding,
        "budget_fraction": args.budget_fraction, "budget_bytes": budget_bytes,
        "bag_sizes": list(config.bag_sizes), "total_ids": config.total_rows,
        "uniform_table_bytes": config.uniform_table_bytes,
        "batch_size": args.batch_size, "steps": args.steps, "bytes": parts,
        "examples_per_second_first_half": rate, "examples_per_second": rate,
        "losses": losses, "backend": keras.backend.backend(),
        "phases": phases.results,
    }
    if args.stop_after == "train":
        return _finish(results, args, out, started)
    with phases("checkpoint"), weights_through_disk():
        atomic_save_model(model, out / "checkpoint.keras")
        atomic_write_json(out / "checkpoint.json", {"next_batch": first_half})
    return _finish(results, args, out, started)


def second_part(args, config, data, out, phases, started):
    """Resume from the checkpoint, train the other half, save, export."""
    with phases("resume"), weights_through_disk():
        model = load_model_file(out / "checkpoint.keras")
        start = json.loads((out / "checkpoint.json").read_text())["next_batch"]
    with phases("train_resumed"):
        rate, losses = train(model, data, start, args.steps - start, args.verbose)
    model_path = out / "model.keras"
    with phases("save"), weights_through_disk():
        atomic_save_model(model, model_path)
    results = {"losses": losses, "examples_per_second": rate,
               "model_file_bytes": model_path.stat().st_size, "phases": phases.results}
    if not args.no_serving:
        from keras_mixed_dim.export import export_for_serving

        first = args.steps + 1
        inputs, expected = reference_batches(model, data, args.check_batches, first)
        results["ops_per_model"] = count_ops(model, data.batch(first)[0])
        with phases("export"):
            report = export_for_serving(model, out / "serving", "dlrm")
        results["export_path"] = str(report.path)
        np.savez(out / "check_inputs.npz", **inputs)
        np.savez(out / "check_expected.npz", **expected)
    return _finish(results, args, out, started)


def run_parts(args, out, started):
    """The first part (to the checkpoint) and the second (from it) each in a
    process of its own, as a resumed job runs, then the C API check: a
    process keeps the memory a dropped model held, and at full size two
    models do not fit."""
    results = {}
    for part in ("first", "second"):
        part_json = out / f"{part}.json"
        command = [sys.executable, str(pathlib.Path(__file__).resolve()), *args.argv,
                   "--part", part, "--out", str(out), "--results-json", str(part_json)]
        if subprocess.run(command).returncode != 0:
            raise SystemExit(f"error: the {part} part failed (see above)")
        got = json.loads(part_json.read_text())
        phases = {**results.get("phases", {}), **got.pop("phases")}
        losses = results.get("losses", []) + got.pop("losses")
        if part == "second":
            # examples/s of the resumed half, as in an uninterrupted run
            got["examples_per_second"] = (got["examples_per_second"]
                                          if np.isfinite(got["examples_per_second"])
                                          else results["examples_per_second"])
        results.update(got)
        results["phases"], results["losses"] = phases, losses
    if not args.no_serving:
        check = Phases()
        with check("serving_check"):
            results["serving"] = capi_check(out, results["export_path"],
                                            args.serving_requests)
        # the check runs in its own process: its peak, not this one's
        check.results["serving_check"]["peak_rss_bytes"] = \
            results["serving"]["peak_rss_bytes"]
        results["phases"].update(check.results)
    return _finish(results, args, out, started)


def _finish(results, args, out, started):
    results["wall_seconds"] = time.perf_counter() - started
    if args.results_json:
        atomic_write_json(args.results_json, results)
    if not args.out:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    return results


def capi_check(out, export_path, requests):
    """Runs examples/common/capi_check.py (no TensorFlow Python package)."""
    command = [sys.executable, str(HERE / "common" / "capi_check.py"), str(export_path),
               str(out / "check_inputs.npz"), str(out / "check_expected.npz"),
               str(requests)]
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode != 0:
        raise SystemExit(f"error: the C API check failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def print_summary(results):
    print(f"\n{results['preset']} 1/{results['scale']:g}, {results['embedding']} at "
          f"{results['budget_fraction']}, batch {results['batch_size']}")
    for part in PARTS:
        print(f"  {part:>12}  {results['bytes'][part] / GIB:10.3f} GiB")
    print(f"  {'phase':>14} {'seconds':>9} {'peak RSS GiB':>13}")
    for name in (p for p in PHASES if p in results["phases"]):
        phase = results["phases"][name]
        print(f"  {name:>14} {phase['seconds']:9.1f} "
              f"{phase['peak_rss_bytes'] / GIB:13.2f}")
    print(f"  examples/s {results['examples_per_second']:,.0f}; losses "
          f"{results['losses'][0]:.4f} -> {results['losses'][-1]:.4f}")
    serving = results.get("serving")
    if serving:
        latency = ", ".join(f"batch {b}: p50 {v['p50_ms']:.2f} ms"
                            for b, v in serving["latency"].items())
        print(f"  C API: load + first answer {serving['load_and_first_answer_seconds']:.1f}"
              f" s, max |export - predict| {serving['max_abs_difference']:.2e}, "
              f"{latency}, {results['ops_per_model']} ops per model")
    print(f"  wall {results['wall_seconds']:.1f} s")


def main(argv=None):
    args = parse_args(argv)
    results = run(args)
    if args.part is None:
        print_summary(results)


if __name__ == "__main__":
    main()
