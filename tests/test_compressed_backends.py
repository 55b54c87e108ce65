"""Runs the compressed-embedding and hash tests again under JAX (without
x64) and PyTorch: the hashes must agree bit for bit with the numpy reference
there too. Keras fixes its backend at import, so each run is a process."""

import os
import pathlib
import subprocess
import sys

import pytest

TESTS = pathlib.Path(__file__).resolve().parent


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("test_file", ["test_hashes.py", "test_compressed_layers.py"])
def test_suite_passes_on_backend(backend, test_file):
    pytest.importorskip(backend, reason=f"the {backend} backend needs {backend}")
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_X64", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(TESTS / test_file)],
        env=env, capture_output=True, text=True, timeout=1200,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout else ""
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary
