"""Runs SavedModels through the C API (never importing TensorFlow's Python
package): `capi_run.py EXPORT_DIR INPUTS.npz OUTPUTS.npz [EXPORT_DIR
INPUTS.npz OUTPUTS.npz ...]`; prints one JSON line per export, in order, with
the signature, empty-batch shapes, the errors of bad feeds (an extra
trailing axis, a missing axis, a wrong dtype: each per input) and whether
TF was imported. Several exports share one process because loading the
C library dominates a small model's check."""

import importlib.util
import json
import pathlib
import sys

import numpy as np

# By file path: importing the `keras_mixed_dim` package imports Keras and
# TensorFlow, and this check must run without TensorFlow's Python package.
_CAPI = pathlib.Path(__file__).resolve().parents[2] / "keras_mixed_dim" / "testing" / "capi.py"
_spec = importlib.util.spec_from_file_location("capi", _CAPI)
capi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(capi)
CApiModel = capi.CApiModel


def error_of(model, feed):
    try:
        model.run(feed)
    except (RuntimeError, ValueError, TypeError) as error:
        return str(error)
    return None


def check(export_dir, inputs_path, outputs_path):
    model = CApiModel(export_dir)
    inputs = dict(np.load(inputs_path))
    result = {"signature": model.signature}
    np.savez(outputs_path, **model.run(inputs))
    empty = {k: v[:0] for k, v in inputs.items()}
    result["empty_shapes"] = {k: list(v.shape) for k, v in model.run(empty).items()}
    result["errors"] = {}
    for key, value in inputs.items():
        extra_axis = {**inputs, key: value[..., None]}
        # one fewer axis: the first row's values for a (batch, n) input, the
        # first value (a scalar) for a (batch,) input
        fewer_axes = {**inputs, key: value[0]}
        if value.dtype.kind in "SUO":
            other = np.zeros(value.shape, np.float32)
        else:
            other = value.astype(np.float64 if value.dtype != np.float64 else np.int64)
        wrong_dtype = {**inputs, key: other}
        result["errors"][key] = {
            "extra_axis": error_of(model, extra_axis),
            "fewer_axes": error_of(model, fewer_axes),
            "wrong_dtype": error_of(model, wrong_dtype),
        }
    # the first input with an extra axis (the key older tests read)
    result["bad_shape_error"] = result["errors"][sorted(inputs)[0]]["extra_axis"]
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    return result


arguments = sys.argv[1:]
if not arguments or len(arguments) % 3:
    sys.exit("usage: capi_run.py EXPORT_DIR INPUTS.npz OUTPUTS.npz [...]")
for index in range(0, len(arguments), 3):
    print(json.dumps(check(*arguments[index:index + 3])), flush=True)
