"""Serving latency of SavedModels through the TensorFlow C API.

    python benchmarks/capi_latency.py REQUESTS INPUTS.npz EXPORT_DIR [EXPORT_DIR ...]

Loads each export with `keras_mixed_dim/testing/capi.py` (the C API loader;
this process never imports TensorFlow's Python package, as a server would
not), then for batch 1 and batch 512 (the first rows of each input in
INPUTS.npz) runs 20 warm-up requests and REQUESTS timed ones. Prints one
JSON line: `{export_dir: {"1": [p50 ms, p99 ms], "512": [...]}}`. The
benchmarks run it as a separate process after exporting.
"""

import importlib.util
import json
import pathlib
import sys

import numpy as np

BATCHES = (1, 512)
WARMUP = 20


def load_capi():
    # By path: importing the package would import Keras and TensorFlow.
    path = pathlib.Path(__file__).resolve().parents[1] / "keras_mixed_dim" / "testing" / "capi.py"
    spec = importlib.util.spec_from_file_location("capi", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def latencies(model, inputs, requests):
    capi = load_capi()
    return {str(batch): list(capi.latency_ms(
        model, {k: v[:batch] for k, v in inputs.items()}, requests, WARMUP))
        for batch in BATCHES}


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    requests, inputs_path, export_dirs = int(argv[0]), argv[1], argv[2:]
    capi = load_capi()
    inputs = dict(np.load(inputs_path))
    short = [k for k, v in inputs.items() if len(v) < max(BATCHES)]
    if short:
        sys.exit(f"error: inputs {short} have fewer than {max(BATCHES)} rows")
    result = {path: latencies(capi.CApiModel(path), inputs, requests)
              for path in export_dirs}
    assert "tensorflow" not in sys.modules, "the C API check imported TensorFlow"
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
