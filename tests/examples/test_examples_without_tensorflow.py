"""The examples' synthetic paths under JAX with TensorFlow hidden: the JAX
path must never need TensorFlow. (The layer suites run under JAX and PyTorch
as a backend matrix in .ci/run.)"""

import json
import math
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    ["examples/movielens.py", "--synthetic-ratings", "6000", "--epochs", "1",
     "--distribute", "model"],
    ["examples/criteo.py", "--synthetic-rows", "8000", "--batch-size", "512",
     "--distribute", "data"],
], ids=["movielens-model-parallel", "criteo-data-parallel"])
@pytest.mark.slow
def test_examples_run_on_jax_without_tensorflow(argv, tmp_path, run_python):
    # an importable `tensorflow` that fails, as on a machine without it
    blocker = tmp_path / "no_tensorflow" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise ImportError('tensorflow is hidden from this test')\n")
    env = dict(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=os.pathsep.join(
                   [str(blocker.parent), os.environ.get("PYTHONPATH", "")]))
    results = tmp_path / "results.json"
    run_python(*argv, "--verbose", "0", "--results-json", results, env=env)
    data = json.loads(results.read_text())
    final = data["mse"]["test"] if "mse" in data else data["val"]["auc"]
    assert math.isfinite(final), data
    if "table_updates" in data:  # the Criteo example reports it
        assert data["table_updates"] == "sparse"
    probe = run_python("-c", "import tensorflow", env=env, check=False)
    assert "hidden from this test" in probe.stderr  # the blocker was in effect
