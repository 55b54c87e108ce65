import json

import numpy as np
import pytest


@pytest.fixture
def run_c_api(run_python, tmp_path):
    """Runs an export through `tests/programs/capi_run.py` in a fresh process
    (TF's C API, no TensorFlow Python package); returns (outputs, report)."""

    def run(export_dir, inputs):
        inputs_path, outputs_path = tmp_path / "capi_in.npz", tmp_path / "capi_out.npz"
        np.savez(inputs_path, **inputs)
        stdout = run_python.program("capi_run.py", export_dir, inputs_path, outputs_path)
        return dict(np.load(outputs_path)), json.loads(stdout.strip().splitlines()[-1])

    return run
