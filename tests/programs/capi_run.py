"""Runs a SavedModel through the C API (never importing TensorFlow's Python
package): `capi_run.py EXPORT_DIR INPUTS.npz OUTPUTS.npz`; prints JSON with
the signature, empty-batch shapes, a bad-shape error and whether TF was imported."""

import json, sys
import numpy as np
from keras_mixed_dim.testing.capi import CApiModel
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
