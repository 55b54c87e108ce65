"""Exported MD DLRM vs exported uniform DLRM, served through the C API loader.

Builds both models on Kaggle cardinalities times `--scale` (same
architecture, d=16; MD per table at alpha 0.3), with string vocabularies of
hex values like Criteo's, exports each with `export_criteo`, then times
requests in a separate process that loads the SavedModels through the
TensorFlow C API (no TensorFlow Python package): p50 / p99 latency for
batch 1 and batch 512. Prints the export sizes split into embedding tables,
other variables and vocabulary tables, `variables/` on disk, and the range
of ops per embedding layer's inference graph.

    python benchmarks/bench_export.py --scale 0.05
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES  # noqa: E402
from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary  # noqa: E402
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo  # noqa: E402
from keras_mixed_dim.datasets.criteo.synthetic import hex_code  # noqa: E402
from keras_mixed_dim.export import export_criteo  # noqa: E402
from keras_mixed_dim.models.dlrm import dlrm  # noqa: E402
from keras_mixed_dim.models.dlrm import embedding_layers  # noqa: E402

CAPI = pathlib.Path(__file__).resolve().parents[1] / "keras_mixed_dim/testing/capi.py"
TIMER = textwrap.dedent(
    """
    import importlib.util, json, sys, time
    import numpy as np
    # by path: importing the package would import Keras and TensorFlow
    spec = importlib.util.spec_from_file_location("capi", sys.argv[4])
    capi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(capi)
    CApiModel = capi.CApiModel
    export_dir, inputs_path, requests = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = CApiModel(export_dir)
    data = dict(np.load(inputs_path))
    result = {}
    for batch in (1, 512):
        feed = {k: v[:batch] for k, v in data.items()}
        for _ in range(20):
            model.run(feed)
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            model.run(feed)
            times.append(time.perf_counter() - start)
        result[batch] = [1e3 * float(np.percentile(times, q)) for q in (50, 99)]
    assert "tensorflow" not in sys.modules
    print(json.dumps(result))
    """
)


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


def inference_ops(layer):
    """Ops in the layer's traced inference graph, without constants,
    placeholders and variable reads: the per-request work it schedules."""
    import tensorflow as tf

    call = tf.function(lambda ids: layer(ids, training=False))
    graph = call.get_concrete_function(tf.TensorSpec((None,), tf.int32)).graph
    skipped = {"Placeholder", "Const", "NoOp", "Identity", "ReadVariableOp"}
    return sum(op.type not in skipped for op in graph.get_operations())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--work-dir")
    args = parser.parse_args()
    cardinalities = [max(2, int(round(c * args.scale))) for c in KAGGLE_CARDINALITIES]
    work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="kmd_export_"))
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
    print(f"{'model':>8} {'emb MiB':>8} {'other MiB':>9} {'vocab MiB':>9} "
          f"{'variables/ MiB':>14} {'b1 p50 ms':>9} {'b1 p99':>7} {'b512 p50':>9} "
          f"{'b512 p99':>9} {'ops/table':>10}")
    rows = {}
    for mode in ("uniform", "table"):
        embeddings = embedding_layers(cardinalities, args.dim, mode, alpha=args.alpha)
        model = dlrm(embeddings, args.dim)
        report = export_criteo(model, work / "serving", f"dlrm_{mode}", vocabulary)
        timing = subprocess.run(
            [sys.executable, "-c", TIMER, str(report.path), str(inputs_path),
             str(args.requests), str(CAPI)], capture_output=True, text=True, check=True)
        latency = json.loads(timing.stdout.strip().splitlines()[-1])
        rows[mode] = (report, latency)
        ops = [inference_ops(layer) for layer in embeddings]
        mib = 1 / 2**20
        print(f"{mode:>8} {report.embedding_bytes * mib:>8.2f} "
              f"{report.other_variable_bytes * mib:>9.2f} "
              f"{report.vocabulary_bytes * mib:>9.2f} "
              f"{report.variables_dir_bytes * mib:>14.2f} "
              f"{latency['1'][0]:>9.2f} {latency['1'][1]:>7.2f} "
              f"{latency['512'][0]:>9.2f} {latency['512'][1]:>9.2f} "
              f"{min(ops):>4}-{max(ops):<5}", flush=True)
    uniform, mixed = rows["uniform"], rows["table"]
    print(f"variables/ uniform / MD: "
          f"{uniform[0].variables_dir_bytes / mixed[0].variables_dir_bytes:.1f}x; "
          f"MD / uniform p50 latency: batch 1 "
          f"{mixed[1]['1'][0] / uniform[1]['1'][0]:.2f}x, batch 512 "
          f"{mixed[1]['512'][0] / uniform[1]['512'][0]:.2f}x")


if __name__ == "__main__":
    main()
