"""Runs a SavedModel through the C API (never importing TensorFlow's Python
package): `capi_run.py EXPORT_DIR INPUTS.npz OUTPUTS.npz`; prints JSON with
the signature, empty-batch shapes, a bad-shape error and whether TF was imported."""

import importlib.util
import json
import pathlib
import sys

import numpy as np

# Loaded by path: importing the package would import Keras and with it
# TensorFlow's Python package, which this check must do without.
CAPI = pathlib.Path(__file__).resolve().parents[2] / "keras_mixed_dim/testing/capi.py"
spec = importlib.util.spec_from_file_location("capi", CAPI)
capi = importlib.util.module_from_spec(spec)
spec.loader.exec_module(capi)
CApiModel = capi.CApiModel
export_dir, inputs_path, outputs_path = sys.argv[1:4]
model = CApiModel(export_dir)
inputs = dict(np.load(inputs_path))
result = {"signature": model.signature}
np.savez(outputs_path, **model.run(inputs))
empty = {k: v[:0] for k, v in inputs.items()}
result["empty_shapes"] = {k: list(v.shape) for k, v in model.run(empty).items()}
try:
    bad = dict(inputs)
    key = sorted(bad)[0]
    bad[key] = np.stack([bad[key], bad[key]], axis=-1)
    model.run(bad)
    result["bad_shape_error"] = None
except RuntimeError as error:
    result["bad_shape_error"] = str(error)
result["tensorflow_imported"] = "tensorflow" in sys.modules
print(json.dumps(result))
