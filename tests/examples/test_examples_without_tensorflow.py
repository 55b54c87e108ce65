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
    # small tables and MLPs: the point is the import path and a sharded run,
    # not the model (the default sizes cost seconds of compiles and
    # initializers per process); 400 validation rows split over 4 devices
    ["examples/movielens.py", "--synthetic-ratings", "6000", "--epochs", "1",
     "--synthetic-users", "400", "--synthetic-items", "800", "--dim", "8",
     "--distribute", "model"],
    ["examples/criteo.py", "--synthetic-rows", "4000", "--batch-size", "512",
     "--cardinality-scale", "0.001", "--dim", "8", "--bottom", "16", "--top", "16",
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
               XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""),
                                   "--xla_force_host_platform_device_count=4"]),
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
