"""The serving check of a scale run, in a process of its own that never
imports TensorFlow's Python package (as TF Serving would not):

    python examples/common/capi_check.py EXPORT_DIR INPUTS.npz EXPECTED.npz REQUESTS

Loads the export through the C API (`keras_mixed_dim/testing/capi.py`,
by path), times the load and the first answer, compares the answers on
every batch of INPUTS.npz (arrays `BATCH/KEY`) with EXPECTED.npz (arrays
`BATCH`, the model's `predict`), then times REQUESTS requests at batch 1
and 512. Prints one JSON line.
"""

import importlib.util
import json
import pathlib
import resource
import sys
import time

import numpy as np

_CAPI = pathlib.Path(__file__).resolve().parents[2] / "keras_mixed_dim" / "testing" / "capi.py"


def load_capi():
    spec = importlib.util.spec_from_file_location("capi", _CAPI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peak_rss():
    """This process's peak resident bytes: VmHWM, which starts afresh at
    exec (ru_maxrss would carry the parent's peak from before the fork)."""
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv):
    export_dir, inputs_path, expected_path, requests = argv[0], argv[1], argv[2], int(argv[3])
    capi = load_capi()
    stored = dict(np.load(inputs_path))
    expected = dict(np.load(expected_path))
    batches = {}
    for key, value in stored.items():
        batch, name = key.split("/", 1)
        batches.setdefault(batch, {})[name] = value
    order = sorted(batches, key=int)
    start = time.perf_counter()
    model = capi.CApiModel(export_dir)
    first = model.run(batches[order[0]])
    first_answer = time.perf_counter() - start
    output = next(iter(first))
    differences = []
    for batch in order:
        answer = model.run(batches[batch])[output].reshape(-1)
        differences.append(float(np.max(np.abs(answer - expected[batch].reshape(-1)))))
    feed = batches[order[0]]
    size = len(next(iter(feed.values())))
    latency = {}
    for rows in (1, 512):
        if rows > size:
            continue
        p50, p99 = capi.latency_ms(model, {k: v[:rows] for k, v in feed.items()},
                                   requests, warmup=min(20, requests))
        latency[str(rows)] = {"p50_ms": p50, "p99_ms": p99}
    model.close()
    print(json.dumps({
        "load_and_first_answer_seconds": first_answer,
        "max_abs_difference": max(differences),
        "batches_compared": len(order),
        "latency": latency,
        "tensorflow_imported": "tensorflow" in sys.modules,
        "peak_rss_bytes": peak_rss(),
    }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
