"""Chief-only outputs of the examples' runs (results JSON, saved models).

Every worker of a multi-worker job takes part in saving (reading
synchronized variables can need all of them); only the chief's files are
kept.
"""

import contextlib
import json
import os
import shutil
import tempfile

import keras

from keras_mixed_dim.io_utils import atomic_save_model
from keras_mixed_dim.io_utils import atomic_write_json


def is_chief():
    """Whether this process should write the run's outputs.

    False on the non-chief workers of a TF_CONFIG cluster and on JAX
    processes other than 0; True for a single process.
    """
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task")
    if task:
        if task.get("type") == "chief":
            return True
        if "chief" in config.get("cluster", {}):
            return False
        return task.get("type") == "worker" and int(task.get("index", 0)) == 0
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index() == 0
    return True


@contextlib.contextmanager
def worker_output_path(path):
    """Yields `path` on the chief and a throw-away path on the other workers.

    Every worker must take part in saving a model (reading synchronized
    variables can need all of them); only the chief's copy is kept.
    """
    if is_chief():
        yield path
        return
    scratch = tempfile.mkdtemp(prefix="worker-output-")
    try:
        yield os.path.join(scratch, os.path.basename(path))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_run_outputs(results, results_json=None, model=None, model_path=None):
    """Writes a run's results JSON and `.keras` model, keeping the chief's only.

    Every worker saves the model (see `worker_output_path`); only the chief
    writes `results_json`. Both writes are atomic.

    Returns:
        Whether this process is the chief, i.e. whether the caller should
        write its own side files too.
    """
    chief = is_chief()
    if results_json and chief:
        atomic_write_json(results_json, results)
    if model_path:
        with worker_output_path(model_path) as path:
            atomic_save_model(model, path)
    return chief
