"""Exported MD DLRM vs exported uniform DLRM, served through the C API loader.

Builds both models on Kaggle cardinalities times `--scale` (same
architecture, d=16; MD per table at alpha 0.3), with string vocabularies of
hex values like Criteo's, exports each with `export_for_serving`
and `CriteoPreprocessing`, then times
requests in a separate process that loads the SavedModels through the
TensorFlow C API (no TensorFlow Python package): p50 / p99 latency for
batch 1 and batch 512. Prints the export sizes split into embedding tables,
other variables and vocabulary tables, `variables/` on disk, and the range
of ops per embedding layer's inference graph, and the op types of each
stacked model's inference graph (as the export traces it: a stacked MD layer
through its fused lookup unless `--grouped-only`).

    python benchmarks/bench_export.py --scale 0.05

`--with-grouped` adds the stacked MD model exported with its grouped lookup
(`fuse_stacked=False`, one gather per width group) to the same interleaved
run, `--with-batched` the one exported with `fuse_stacked="batched"` (the
default takes the block-diagonal projection where it fits its cap); `--op-costs` also prints, per stacked export, the time of each op type
in a batch-1 request (TensorFlow's step stats over 200 traced requests,
Python runtime, so only the shares are meant to be read).

With `--kaggle-vocabulary`, instead: vocabularies at the full Kaggle
cardinalities (33.8M distinct synthetic hex values, written to vocabulary
files in a streaming pass), a per-table MD DLRM over them, one
`export_for_serving` with `CriteoPreprocessing` reading the files, and the
sizes of `saved_model.pb` (the vocabularies ship in `assets/`, not in the
graph), `assets/` and `variables/`; optionally one request through the C API.

    python benchmarks/bench_export.py --kaggle-vocabulary --work-dir /tmp/kaggle_export
"""

import argparse
import collections
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES  # noqa: E402
from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary  # noqa: E402
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo  # noqa: E402
from keras_mixed_dim.datasets.criteo.synthetic import hex_code  # noqa: E402
from keras_mixed_dim.datasets.criteo.preprocessing import CriteoPreprocessing  # noqa: E402
from keras_mixed_dim.export import export_for_serving  # noqa: E402
from keras_mixed_dim.models.dlrm import dlrm  # noqa: E402
from keras_mixed_dim.models.dlrm import embedding_layers  # noqa: E402

CAPI_LATENCY = pathlib.Path(__file__).resolve().parent / "capi_latency.py"


def vocabulary_for(cardinalities):
    """Hex-string vocabularies (one OOV bucket), ranked like the synthetic ids;
    the rare 32-bit code collisions are dropped, as a vocabulary would."""
    tokens = []
    for f, n in enumerate(cardinalities):
        codes = np.char.mod("%08x", hex_code(f, np.arange(n - 1)))
        _, first = np.unique(codes, return_index=True)
        tokens.append(tuple(codes[np.sort(first)].tolist()))
    counts = tuple(np.arange(len(t), 0, -1, dtype=np.int64) for t in tokens)
    return CriteoVocabulary(tuple(tokens), counts, tuple(0 for _ in tokens), 1)


SKIPPED_OPS = {"Placeholder", "Const", "NoOp", "Identity", "ReadVariableOp"}


def _scheduled_ops(graph):
    """Ops in a traced inference graph without constants, placeholders and
    variable reads: the per-request work it schedules."""
    return sum(op.type not in SKIPPED_OPS for op in graph.get_operations())


def _op_types(graph):
    """`Counter` of the scheduled ops' types."""
    return collections.Counter(op.type for op in graph.get_operations()
                               if op.type not in SKIPPED_OPS)


@contextlib.contextmanager
def fused(model, fuse=True):
    """The model's fusable stacked layers fused for serving, as
    `export_for_serving(fuse_stacked=fuse)` traces them."""
    from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding

    projection = "auto" if fuse is True else fuse
    with contextlib.ExitStack() as stack:
        if fuse:
            for layer in model._flatten_layers(include_self=False):
                if isinstance(layer, StackedEmbedding) and layer.fusable:
                    stack.enter_context(layer.fused_for_serving(projection))
        yield


def inference_ops(layer):
    """Scheduled ops of one embedding layer's inference graph."""
    import tensorflow as tf

    call = tf.function(lambda ids: layer(ids, training=False))
    return _scheduled_ops(call.get_concrete_function(tf.TensorSpec((None,), tf.int32)).graph)


def model_ops(model, features, num_dense=13, fuse=True):
    """Op types of the whole model's inference graph on id inputs, as the
    export traces it (without the string lookups, the same for every
    model): a `Counter`."""
    import tensorflow as tf

    call = tf.function(lambda dense, ids: model({"dense": dense, "categorical": ids},
                                                training=False))
    with fused(model, fuse):
        return _op_types(call.get_concrete_function(
            tf.TensorSpec((None, num_dense), tf.float32),
            tf.TensorSpec((None, features), tf.int32)).graph)


def op_costs(export_dir, inputs, requests=200, batch=1):
    """Microseconds per batch-`batch` request of each op type of the export's
    serving graph, from TensorFlow's step stats (TF1 session, full trace),
    most expensive first."""
    import tensorflow as tf

    graph = tf.Graph()
    totals = collections.Counter()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(export_dir))
        signature = meta.signature_def["serving_default"]
        fetches = [t.name for t in signature.outputs.values()]
        feed = {signature.inputs[k].name: v[:batch] for k, v in inputs.items()}
        for _ in range(20):
            session.run(fetches, feed)
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        types = {op.name: op.type for op in graph.get_operations()}
        for _ in range(requests):
            metadata = tf.compat.v1.RunMetadata()
            session.run(fetches, feed, options=options, run_metadata=metadata)
            for device in metadata.step_stats.dev_stats:
                for node in device.node_stats:
                    name = node.node_name.split(":")[0]
                    kind = types.get(name) or node.timeline_label.split(" = ")[-1].split("(")[0]
                    totals[kind] += node.all_end_rel_micros
    return [(kind, micros / requests) for kind, micros in totals.most_common()]


def format_ops(counts):
    """`Type xN` pairs, most frequent first."""
    return ", ".join(f"{kind} x{n}" for kind, n in sorted(
        counts.items(), key=lambda item: (-item[1], item[0])))


def peak_rss_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def kaggle_vocabulary_export(args, work):
    """Full-cardinality vocabulary files -> export; prints the sizes."""
    import time

    from keras_mixed_dim.datasets.criteo.format import CATEGORICAL_NAMES
    from keras_mixed_dim.datasets.criteo.synthetic import distinct_hex_codes
    from keras_mixed_dim.datasets.vocabulary_files import write_vocabulary_files

    folder = work / "kaggle.vocab"
    kept = [c - 1 for c in KAGGLE_CARDINALITIES]  # one OOV bucket per feature

    def column(feature, n, chunk=1 << 20):
        for start in range(0, n, chunk):
            ids = np.arange(start, min(n, start + chunk))
            codes = distinct_hex_codes(feature, ids).astype("U8").tolist()
            yield from zip(codes, (n - ids).tolist())  # counts fall with rank

    started = time.perf_counter()
    try:  # an earlier run's files in --work-dir, if whole
        from keras_mixed_dim.datasets.vocabulary_files import read_manifest

        manifest = read_manifest(folder, CATEGORICAL_NAMES)
        if [manifest["files"][n]["lines"] for n in CATEGORICAL_NAMES] != kept:
            raise ValueError("other sizes")
        print(f"vocabulary files: reusing {folder}")
    except (FileNotFoundError, ValueError):
        write_vocabulary_files(
            folder, {name: column(f, n) for f, (name, n) in enumerate(zip(CATEGORICAL_NAMES, kept))},
            header={"num_oov_buckets": 1, "min_count": 1, "top_k": None,
                    "dropped": [0] * len(kept), "meta": {"synthetic": True}})
        written = time.perf_counter() - started
        files_mib = sum(p.stat().st_size for p in folder.glob("*.tsv")) / 2**20
        print(f"vocabulary files: {sum(kept):,} values, {files_mib:,.1f} MiB, written in "
              f"{written:.0f} s", flush=True)

    started = time.perf_counter()
    preprocess = CriteoPreprocessing(folder)
    tables = time.perf_counter() - started
    cardinalities = list(preprocess.lookup.sizes)
    embeddings = embedding_layers(cardinalities, args.dim, "table", alpha=args.alpha)
    model = dlrm(embeddings, args.dim, stacked=False)  # the documented layout
    started = time.perf_counter()
    report = export_for_serving(model, work / "serving", "dlrm_kaggle", preprocess=preprocess,
                                output_names="probability",
                                warmup=preprocess.warmup_inputs())
    exported = time.perf_counter() - started
    mib = 1 / 2**20
    print(f"tables initialised from the files in {tables:.0f} s; export in {exported:.0f} s "
          f"to {report.path}")
    print(f"  saved_model.pb    {report.saved_model_bytes * mib:10.3f} MiB "
          f"({report.saved_model_bytes:,} bytes)")
    print(f"  assets/           {report.assets_bytes * mib:10.1f} MiB")
    print(f"  variables/        {report.variables_dir_bytes * mib:10.1f} MiB "
          f"(embedding tables {report.embedding_bytes * mib:.1f} MiB)")
    print(f"  peak host memory  {peak_rss_mib():10.0f} MiB")
    if args.check_request:
        # one request through the C API (a fresh process that reads the
        # tables again) against model.predict on the ids the synthetic
        # rows were drawn with: line i of each vocabulary file is id i
        import tensorflow as tf

        dense, categorical, _ = SyntheticCriteo(8, cardinalities, seed=0).arrays()
        raw_dense = np.rint(np.expm1(dense)).astype(np.float32)
        strings = np.stack([distinct_hex_codes(f, categorical[:, f])
                            for f in range(len(cardinalities))], axis=1)
        inputs, outputs = work / "request.npz", work / "response.npz"
        np.savez(inputs, dense=raw_dense, categorical=strings)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(pathlib.Path(__file__).resolve().parents[1] / "tests"
                                 / "programs" / "capi_run.py"),
             str(report.path), str(inputs), str(outputs)], capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stderr[-3000:])
            raise SystemExit("the C API request failed")
        served = np.load(outputs)["probability"]
        ids = preprocess({"dense": tf.constant(raw_dense),
                          "categorical": tf.constant(strings)})
        expected = model.predict({"dense": ids["dense"].numpy(),
                                  "categorical": categorical}, verbose=0).reshape(-1)
        print(f"  C API: loaded (tables read again) and served in "
              f"{time.perf_counter() - started:.0f} s; ids equal the synthetic ids: "
              f"{np.array_equal(ids['categorical'].numpy(), categorical)}; max |served - "
              f"predict| = {np.abs(served - expected).max():.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5,
                        help="the models take turns in this many rounds of "
                        "requests / rounds requests each")
    parser.add_argument("--work-dir")
    parser.add_argument("--layouts", nargs="+", choices=("per_feature", "stacked"),
                        default=["per_feature", "stacked"],
                        help="one layer per feature, and/or one StackedEmbedding "
                        "(dlrm's default)")
    parser.add_argument("--kaggle-vocabulary", action="store_true",
                        help="export with vocabularies at the full Kaggle cardinalities")
    parser.add_argument("--with-grouped", action="store_true",
                        help="also time the stacked MD model exported with its "
                        "grouped lookup (fuse_stacked=False)")
    parser.add_argument("--with-batched", action="store_true",
                        help="also time the stacked MD model exported with "
                        "fuse_stacked='batched'")
    parser.add_argument("--op-costs", action="store_true",
                        help="print each stacked export's op types' time in a "
                        "batch-1 request (TF step stats)")
    parser.add_argument("--check-request", action="store_true",
                        help="with --kaggle-vocabulary: also load the export through "
                        "the C API and serve one request (reads the tables again)")
    args = parser.parse_args()
    if args.kaggle_vocabulary:
        work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="kmd_export_"))
        work.mkdir(parents=True, exist_ok=True)
        kaggle_vocabulary_export(args, work)
        return
    cardinalities = [max(2, int(round(c * args.scale))) for c in KAGGLE_CARDINALITIES]
    work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="kmd_export_"))
    work.mkdir(parents=True, exist_ok=True)
    vocabulary = vocabulary_for(cardinalities)
    cardinalities = list(vocabulary.sizes)
    dense, categorical, _ = SyntheticCriteo(512, cardinalities, seed=0).arrays()
    raw_dense = np.rint(np.expm1(dense)).astype(np.float32)
    strings = np.stack([np.char.mod("%08x", hex_code(f, categorical[:, f]))
                        for f in range(len(cardinalities))], axis=1).astype("S8")
    inputs_path = work / "inputs.npz"
    np.savez(inputs_path, dense=raw_dense, categorical=strings)
    print(f"DLRM d={args.dim}, cardinalities x {args.scale} ({sum(cardinalities):,} ids), "
          f"string vocabularies in-graph; C API loader, {args.requests} requests "
          f"per cell, {os.cpu_count()} cores")
    print(f"{'model':>16} {'emb MiB':>8} {'other MiB':>9} {'vocab MiB':>9} "
          f"{'variables/ MiB':>14} {'b1 p50 ms':>9} {'b1 p99':>7} {'b512 p50':>9} "
          f"{'b512 p99':>9} {'ops/model':>9} {'ops/table':>10}")
    rows, exported, op_types = {}, {}, {}
    for layout in args.layouts:
        for mode in ("uniform", "table"):
            embeddings = embedding_layers(cardinalities, args.dim, mode, alpha=args.alpha)
            model = dlrm(embeddings, args.dim, stacked=layout == "stacked")
            name = mode if layout == "per_feature" else f"{mode}/stacked"
            variants = [(name, True)]
            if layout == "stacked" and mode == "table" and args.with_grouped:
                variants.append(("table/grouped", False))
            if layout == "stacked" and mode == "table" and args.with_batched:
                variants.append(("table/batched", "batched"))
            for variant, fuse in variants:
                report = export_for_serving(model, work / "serving",
                                            f"dlrm_{variant.replace('/', '_')}",
                                            preprocess=CriteoPreprocessing(vocabulary),
                                            output_names="probability",
                                            fuse_stacked=fuse)
                per_table = ([inference_ops(layer) for layer in embeddings]
                             if layout == "per_feature" else None)
                op_types[variant] = model_ops(model, len(cardinalities), fuse=fuse)
                exported[variant] = (report, op_types[variant].total(), per_table)
    # every export loaded at once, taking turns round by round (a shared
    # machine's load then falls on all of them alike)
    timing = subprocess.run(
        [sys.executable, str(CAPI_LATENCY), "--rounds", str(args.rounds),
         str(args.requests), str(inputs_path)]
        + [str(report.path) for report, _, _ in exported.values()],
        capture_output=True, text=True, check=True)
    latencies = json.loads(timing.stdout.strip().splitlines()[-1])
    mib = 1 / 2**20
    print(f"load average while timing: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, (report, ops, per_table) in exported.items():
        latency = latencies[str(report.path)]
        rows[name] = (report, latency)
        print(f"{name:>16} {report.embedding_bytes * mib:>8.2f} "
              f"{report.other_variable_bytes * mib:>9.2f} "
              f"{report.vocabulary_bytes * mib:>9.2f} "
              f"{report.variables_dir_bytes * mib:>14.2f} "
              f"{latency['1'][0]:>9.2f} {latency['1'][1]:>7.2f} "
              f"{latency['512'][0]:>9.2f} {latency['512'][1]:>9.2f} "
              f"{ops:>9} "
              + (f"{min(per_table):>4}-{max(per_table):<5}" if per_table else
                 f"{'':>10}"), flush=True)

    def ratio(a, b, batch):
        """Median over the rounds of a's p50 / b's p50 in the same round."""
        return float(np.median(np.divide(rows[a][1][f"{batch}_rounds"],
                                         rows[b][1][f"{batch}_rounds"])))

    for suffix in ("", "/stacked"):
        if f"uniform{suffix}" not in rows:
            continue
        uniform, mixed = rows[f"uniform{suffix}"], rows[f"table{suffix}"]
        print(f"{suffix.strip('/') or 'per feature'}: variables/ uniform / MD: "
              f"{uniform[0].variables_dir_bytes / mixed[0].variables_dir_bytes:.1f}x; "
              f"MD / uniform p50 latency (median of {args.rounds} rounds' ratios): "
              f"batch 1 {ratio(f'table{suffix}', f'uniform{suffix}', 1):.2f}x, "
              f"batch 512 {ratio(f'table{suffix}', f'uniform{suffix}', 512):.2f}x; "
              f"ops {exported[f'table{suffix}'][1]} against "
              f"{exported[f'uniform{suffix}'][1]}")
    if "table/grouped" in rows:
        print(f"stacked MD grouped (fuse_stacked=False) / uniform: batch 1 "
              f"{ratio('table/grouped', 'uniform/stacked', 1):.2f}x, batch 512 "
              f"{ratio('table/grouped', 'uniform/stacked', 512):.2f}x; fused / grouped: "
              f"batch 1 {ratio('table/stacked', 'table/grouped', 1):.2f}x, batch 512 "
              f"{ratio('table/stacked', 'table/grouped', 512):.2f}x; the fused export "
              f"adds {rows['table/stacked'][0].fused_added_bytes:,} bytes")
    if "table/batched" in rows:
        print(f"stacked MD fused, batched projection / uniform: batch 1 "
              f"{ratio('table/batched', 'uniform/stacked', 1):.2f}x, batch 512 "
              f"{ratio('table/batched', 'uniform/stacked', 512):.2f}x; it adds "
              f"{rows['table/batched'][0].fused_added_bytes:,} bytes")
    if "table/stacked" in rows and "uniform" in rows:
        print(f"MD stacked / uniform per feature p50 latency: batch 1 "
              f"{ratio('table/stacked', 'uniform', 1):.2f}x, "
              f"batch 512 {ratio('table/stacked', 'uniform', 512):.2f}x")
    print("op types of each stacked model's inference graph on ids (as exported):")
    for name, counts in op_types.items():
        if "/" in name:
            print(f"  {name:>16} ({counts.total()}): {format_ops(counts)}")
    if args.op_costs:
        print("batch-1 request, microseconds per op type (TF step stats, Python "
              "session: shares only):")
        inputs = dict(np.load(inputs_path))
        for name, (report, _, _) in exported.items():
            if "/" in name:
                costs = op_costs(report.path, inputs)
                print(f"  {name:>16} total {sum(c for _, c in costs):7.1f}: " + ", ".join(
                    f"{kind} {micros:.1f}" for kind, micros in costs[:14]))


if __name__ == "__main__":
    main()
