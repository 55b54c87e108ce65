"""Runs the backend-agnostic layer tests again under the JAX backend.

Keras fixes its backend at import, so the JAX run is a separate pytest
process over the same test file.
"""

import os
import pathlib
import subprocess
import sys

import pytest

TESTS = pathlib.Path(__file__).resolve().parent


@pytest.mark.parametrize("test_file", ["test_layer.py", "test_frequency.py"])
def test_layer_suite_passes_on_jax(test_file):
    pytest.importorskip("jax", reason="the JAX backend needs the jax package")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(TESTS / test_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout else ""
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary
