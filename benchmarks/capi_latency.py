"""Serving latency of SavedModels through the TensorFlow C API.

    python benchmarks/capi_latency.py [--rounds N] REQUESTS INPUTS.npz EXPORT_DIR [EXPORT_DIR ...]

Loads each export with `keras_mixed_dim/testing/capi.py` (the C API loader;
this process never imports TensorFlow's Python package, as a server would
not), then for batch 1 and batch 512 (the first rows of each input in
INPUTS.npz) runs 20 warm-up requests and REQUESTS timed ones. Prints one
JSON line: `{export_dir: {"1": [p50 ms, p99 ms], "512": [...]}}`. The
benchmarks run it as a separate process after exporting.

With `--rounds N`, all exports are loaded first and take turns request by
request: in each of N rounds every export serves REQUESTS / N timed
requests per batch size, alternating (the order reversed every other
round), so exports compared with each other see the same load of a shared
machine; each entry then also has
`"1_rounds"` / `"512_rounds"`, the p50 of each round, for ratios taken
round by round.
"""

import importlib.util
import json
import pathlib
import sys
import time

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


def interleaved(models, inputs, requests, rounds):
    """Latencies of `models` (`{path: model}`) taking turns, round by round."""
    feeds = {batch: {k: v[:batch] for k, v in inputs.items()} for batch in BATCHES}
    for model in models.values():
        for batch in BATCHES:
            for _ in range(WARMUP):
                model.run(feeds[batch])
    times = {path: {batch: [] for batch in BATCHES} for path in models}
    medians = {path: {batch: [] for batch in BATCHES} for path in models}
    per_round = max(1, requests // rounds)
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for batch in BATCHES:
            samples = {path: [] for path in models}
            for _ in range(per_round):
                # request by request, so a burst of load hits every export
                for path in order:
                    start = time.perf_counter()
                    models[path].run(feeds[batch])
                    samples[path].append(1e3 * (time.perf_counter() - start))
            for path in models:
                times[path][batch] += samples[path]
                medians[path][batch].append(float(np.median(samples[path])))
    result = {}
    for path in models:
        result[path] = {}
        for batch in BATCHES:
            result[path][str(batch)] = [float(np.percentile(times[path][batch], q))
                                        for q in (50, 99)]
            result[path][f"{batch}_rounds"] = medians[path][batch]
    return result


def main(argv):
    rounds = None
    if argv[:1] == ["--rounds"]:
        rounds, argv = int(argv[1]), argv[2:]
    if len(argv) < 3:
        sys.exit(__doc__)
    requests, inputs_path, export_dirs = int(argv[0]), argv[1], argv[2:]
    capi = load_capi()
    inputs = dict(np.load(inputs_path))
    short = [k for k, v in inputs.items() if len(v) < max(BATCHES)]
    if short:
        sys.exit(f"error: inputs {short} have fewer than {max(BATCHES)} rows")
    if rounds:
        result = interleaved({path: capi.CApiModel(path) for path in export_dirs},
                             inputs, requests, rounds)
    else:
        result = {path: latencies(capi.CApiModel(path), inputs, requests)
                  for path in export_dirs}
    assert "tensorflow" not in sys.modules, "the C API check imported TensorFlow"
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
