"""MultiWorkerMirroredStrategy with `model.fit`: two worker processes on
127.0.0.1 (TF_CONFIG), compared with one process on the same data."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# An MF model with a mixed-dim item table; plain SGD, so two workers and one
# process do the same arithmetic up to the order of float sums.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras
    from keras_mixed_dim import MixedDimEmbedding
    from keras_mixed_dim.distribute import strategy_scope

    rng = np.random.default_rng(0)
    items = rng.zipf(1.3, size=1024).astype("int64") % 600
    users = rng.integers(0, 50, size=1024)
    target = (np.sin(items % 7) + np.cos(users % 5)).astype("float32")[:, None]
    counts = np.bincount(items, minlength=600)
    multiworker = "TF_CONFIG" in os.environ
    # the strategy first: it configures collective ops before any TF op runs
    with strategy_scope("multiworker" if multiworker else None):
        keras.utils.set_random_seed(0)
        user = keras.Input((), dtype="int64", name="user")
        item = keras.Input((), dtype="int64", name="item")
        u = keras.layers.Embedding(50, 8, name="users")(user)
        v = MixedDimEmbedding(600, 8, counts=counts, num_blocks=3, alpha=0.4,
                              name="items")(item)
        # (batch, 1) predictions: Keras skips the per-replica loss scaling
        # when a 1-D output makes the loss a scalar before its reduction
        model = keras.Model({"user": user, "item": item},
                            keras.ops.sum(u * v, axis=-1, keepdims=True))
        model.compile(keras.optimizers.SGD(5.0), "mse", metrics=["mae"])
    data = tf.data.Dataset.from_tensor_slices(
        ({"user": users, "item": items}, target)).batch(128)
    history = model.fit(data, epochs=4, verbose=0)
    evaluation = model.evaluate(data, verbose=0, return_dict=True)
    print("RESULT " + json.dumps({
        "loss": history.history["loss"], "mae": history.history["mae"],
        "evaluation": evaluation,
        "weights": {w.path: np.asarray(w).ravel().tolist() for w in model.weights},
    }))
    """
)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(argv, count=2, timeout=240):
    """Runs `python argv` as `count` MWMS workers; returns their outputs."""
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


def run_single(argv):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def parse(output):
    line = [x for x in output.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("multiworker") / "train.py"
    path.write_text(SCRIPT)
    return str(path)


def test_two_workers_match_each_other_and_one_process(script):
    workers = [parse(out) for out in run_workers([script])]
    single = parse(run_single([script]))
    # the replicas stay identical: every weight, bit for bit
    assert workers[0]["weights"].keys() == single["weights"].keys()
    for path, values in workers[0]["weights"].items():
        np.testing.assert_array_equal(values, workers[1]["weights"][path], err_msg=path)
    # and they follow the one-process run: same global batches, same updates
    np.testing.assert_allclose(workers[0]["loss"], single["loss"], rtol=1e-4)
    np.testing.assert_allclose(workers[0]["mae"], single["mae"], rtol=1e-4)
    assert workers[0]["loss"][-1] < 0.5 * workers[0]["loss"][0]  # it trained
    for path, values in workers[0]["weights"].items():
        np.testing.assert_allclose(values, single["weights"][path], atol=1e-4,
                                   err_msg=path)
    for key, value in single["evaluation"].items():
        assert workers[0]["evaluation"][key] == pytest.approx(value, rel=1e-4)
        assert workers[1]["evaluation"][key] == workers[0]["evaluation"][key]


def run_example_both_ways(argv, folder):
    """Runs an example on two workers and in one process.

    Returns the two results dicts and the names of the files the workers
    wrote (before the one-process run writes its own).
    """
    run_workers(argv + ["--distribute", "multiworker",
                        "--results-json", str(folder / "mw.json"),
                        "--save", str(folder / "mw.keras")])
    written = sorted(p.name for p in folder.iterdir())
    run_single(argv + ["--results-json", str(folder / "single.json")])
    multiworker = json.loads((folder / "mw.json").read_text())
    single = json.loads((folder / "single.json").read_text())
    # Adam divides by sqrt(v), which magnifies float-order differences in
    # tiny gradients, so the examples match to a looser tolerance than SGD
    np.testing.assert_allclose(multiworker["loss_history"], single["loss_history"],
                               rtol=0.02)
    return multiworker, single, written


def test_movielens_example_multiworker(tmp_path):
    multiworker, single, written = run_example_both_ways(
        ["examples/movielens.py", "--synthetic-ratings", "8000", "--epochs", "2",
         "--verbose", "0"], tmp_path)
    # only the chief writes: one results file, one model, one vocabulary
    assert written == ["mw.json", "mw.keras", "mw.vocab.json"]
    assert multiworker["mse"]["test"] == pytest.approx(single["mse"]["test"], rel=0.02)


def test_criteo_example_multiworker(tmp_path):
    multiworker, single, written = run_example_both_ways(
        ["examples/criteo.py", "--synthetic-rows", "12000", "--batch-size", "512",
         "--verbose", "0"], tmp_path)
    assert written == ["mw.json", "mw.keras"]
    assert multiworker["val"]["logloss"] == pytest.approx(single["val"]["logloss"],
                                                          rel=0.02)
