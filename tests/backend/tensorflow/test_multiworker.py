"""MultiWorkerMirroredStrategy with `model.fit`: two worker processes on
127.0.0.1 (TF_CONFIG), compared with one process on the same data."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

# MultiWorkerMirroredStrategy workers: their programs need TensorFlow's backend
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="tf.distribute needs the TensorFlow backend")

ROOT = pathlib.Path(__file__).resolve().parents[3]
PROGRAMS = ROOT / "tests" / "programs"

def run_workers(argv, free_ports, count=2, timeout=240):
    """Runs `python argv` as `count` MWMS workers; returns their outputs.

    The workers run concurrently (they wait for each other), so this starts
    them with Popen rather than through the `run_python` fixture.
    """
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(count)]}
    processes = []
    for index in range(count):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=timeout)
            assert process.returncode == 0, out[-4000:]
            outputs.append(out)
    finally:
        for process in processes:
            process.kill()
    return outputs


def run_single(argv, run_python):
    return run_python(*argv, drop_env=("TF_CONFIG",), timeout=240).stdout


def parse(output):
    line = [x for x in output.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


SCRIPT = str(PROGRAMS / "multiworker_mf.py")


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_workers_match_each_other_and_one_process(free_ports, run_python):
    # The tables get SparseRowOptimizer's lazy Adam (two slots per table);
    # SGD and Adagrad take the same all-reduce path, checked per optimizer
    # under MirroredStrategy (tests/backend/tensorflow/test_sparse_rows.py).
    workers = [parse(out) for out in run_workers([SCRIPT, "adam"], free_ports)]
    single = parse(run_single([SCRIPT, "adam"], run_python))
    assert any("momentum" in path for path in single["optimizer"])
    for group in ("weights", "optimizer"):
        runs = [{_short(path): values for path, values in run[group].items()}
                for run in (*workers, single)]
        assert runs[0].keys() == runs[2].keys()
        for path, values in runs[0].items():
            # the replicas stay identical: every weight and slot, bit for bit
            np.testing.assert_array_equal(values, runs[1][path], err_msg=path)
            # the global batch's gradient, applied once: as in one process
            np.testing.assert_allclose(values, runs[2][path], rtol=1e-4, atol=1e-5,
                                       err_msg=path)
    np.testing.assert_allclose(workers[0]["loss"], single["loss"], rtol=1e-4)
    np.testing.assert_allclose(workers[0]["mae"], single["mae"], rtol=1e-4)
    assert workers[0]["loss"][-1] < 0.8 * workers[0]["loss"][0]  # it trained
    for key, value in single["evaluation"].items():
        assert workers[0]["evaluation"][key] == pytest.approx(value, rel=1e-4)
        assert workers[1]["evaluation"][key] == workers[0]["evaluation"][key]


def _short(path):
    # A slot's path repeats the optimizer's name scope when the optimizer is
    # built inside `apply` (one process) rather than before `fit` (workers).
    parts = path.split("/")
    return f"{parts[0]}/{parts[-1]}"


def run_example_both_ways(argv, folder, free_ports, run_python):
    """Runs an example on two workers and in one process.

    The callers pass small tables and MLPs: three processes each build,
    train and save the model, and what is compared is the all-reduced
    update and the chief's outputs, not the model's size.

    Returns the two results dicts and the names of the files the workers
    wrote (before the one-process run writes its own).
    """
    run_workers(argv + ["--distribute", "multiworker",
                        "--results-json", str(folder / "mw.json"),
                        "--save", str(folder / "mw.keras")], free_ports)
    written = sorted(p.name for p in folder.iterdir())
    run_single(argv + ["--results-json", str(folder / "single.json")], run_python)
    multiworker = json.loads((folder / "mw.json").read_text())
    single = json.loads((folder / "single.json").read_text())
    # Adam divides by sqrt(v), which magnifies float-order differences in
    # tiny gradients, so the examples match to a looser tolerance than SGD
    np.testing.assert_allclose(multiworker["loss_history"], single["loss_history"],
                               rtol=0.02)
    return multiworker, single, written


@pytest.mark.multiprocess
def test_movielens_example_multiworker(tmp_path, free_ports, run_python):
    multiworker, single, written = run_example_both_ways(
        ["examples/movielens.py", "--synthetic-ratings", "8000", "--epochs", "2",
         "--synthetic-users", "400", "--synthetic-items", "800", "--dim", "8",
         "--verbose", "0"], tmp_path, free_ports, run_python)
    # only the chief writes: one results file, one model, one vocabulary
    assert written == ["mw.json", "mw.keras", "mw.vocab"]
    assert multiworker["mse"]["test"] == pytest.approx(single["mse"]["test"], rel=0.02)


@pytest.mark.multiprocess
def test_criteo_example_multiworker(tmp_path, free_ports, run_python):
    multiworker, single, written = run_example_both_ways(
        ["examples/criteo.py", "--synthetic-rows", "6000", "--batch-size", "512",
         "--cardinality-scale", "0.001", "--dim", "8", "--bottom", "16", "--top", "16",
         "--verbose", "0"], tmp_path, free_ports, run_python)
    assert written == ["mw.json", "mw.keras"]
    assert multiworker["val"]["logloss"] == pytest.approx(single["val"]["logloss"],
                                                          rel=0.02)
