"""Every compressed embedding kind exports for TF Serving with stock ops and
serves the Keras model's predictions through the C API loader."""

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo
from keras_mixed_dim.datasets.criteo.preprocessing import export_criteo
from keras_mixed_dim.models.dlrm import dlrm
from keras_mixed_dim.models.dlrm import embedding_layers

ROOT = pathlib.Path(__file__).resolve().parents[2]
CARDINALITIES = [3000, 200, 40] + [5] * 23


def graph_op_types(export_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((pathlib.Path(export_dir) / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    return ops


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["qr", "md_qr", "hashing", "robe", "lma"])
def test_compressed_dlrm_serves_through_the_c_api(mode, tmp_path):
    from tensorflow.python.framework import op_def_registry

    uniform_bytes = sum(CARDINALITIES) * 8 * 4
    embeddings = embedding_layers(CARDINALITIES, 8, mode, budget_bytes=uniform_bytes / 8)
    model = dlrm(embeddings, 8, bottom=(16,), top=(16,))
    dense, categorical, labels = SyntheticCriteo(512, CARDINALITIES, seed=0).arrays()
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit({"dense": dense, "categorical": categorical}, labels, epochs=1,
              batch_size=128, verbose=0)
    report = export_criteo(model, tmp_path / "serving", f"dlrm_{mode}")
    export_dir = report.path
    ops = graph_op_types(export_dir)
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    assert all(op_def_registry.get(op) is not None for op in ops), ops
    raw_dense = np.expm1(np.asarray(dense[:32], np.float32))  # serve() takes log1p
    ids = np.asarray(categorical[:32], np.int32).copy()
    ids[0, 0] = -1  # an out-of-range id serves as zeros, like in Keras
    inputs_path, outputs_path = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs_path, dense=raw_dense, categorical=ids)
    result = subprocess.run(
        [sys.executable, ROOT / "tests" / "programs" / "capi_run.py", export_dir,
         inputs_path, outputs_path], capture_output=True, text=True, timeout=600,
        cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    json.loads(result.stdout.strip().splitlines()[-1])
    served = np.load(outputs_path)["probability"]
    expected = model.predict({"dense": np.log1p(raw_dense), "categorical": ids},
                             verbose=0).reshape(-1)
    np.testing.assert_allclose(served, expected, atol=1e-5)
