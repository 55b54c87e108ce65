"""SavedModel export, loaded the way TF Serving loads it: through the C API in
a process that never imports TensorFlow's Python package."""

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixed_dim.datasets.criteo.pipeline import CriteoLookup
from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo
from keras_mixed_dim.export import write_version

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROGRAMS = ROOT / "tests" / "programs"

def run(args, timeout=600):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True,
                            text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def run_c_api(export_dir, inputs, tmp_path):
    inputs_path, outputs_path = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs_path, **inputs)
    stdout = run([PROGRAMS / "capi_run.py", export_dir, inputs_path, outputs_path])
    return dict(np.load(outputs_path)), json.loads(stdout.strip().splitlines()[-1])


def export(model_path, base, name):
    stdout = run([ROOT / "export" / "export_model.py", "--model", model_path,
                  "--name", name, "--base", base])
    assert "exported" in stdout
    return stdout


def graph_op_types(export_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((pathlib.Path(export_dir) / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    return ops


def check_stock_ops(export_dir):
    from tensorflow.python.framework import op_def_registry

    ops = graph_op_types(export_dir)
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    assert all(op_def_registry.get(op) is not None for op in ops), ops
    assert "ScatterNd" not in ops  # no frequency counting in serving


@pytest.fixture(scope="module")
def movielens_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("movielens")
    model_path = tmp / "mf.keras"
    run([ROOT / "examples" / "movielens.py", "--synthetic-users", "300",
         "--synthetic-items", "800", "--synthetic-ratings", "20000", "--epochs", "2",
         "--embedding", "mixed", "--dim", "8", "--verbose", "0", "--save", model_path])
    export(model_path, tmp / "serving", "movielens")
    return tmp, model_path


def test_movielens_export_matches_keras_through_the_c_api(movielens_export, tmp_path):
    tmp, model_path = movielens_export
    vocab = json.loads((tmp / "mf.vocab.json").read_text())
    users = np.array(vocab["user"][:20] + [10**9, -5], dtype=np.int64)
    items = np.array(vocab["item"][:20] + [vocab["item"][0], 10**9], dtype=np.int64)
    outputs, info = run_c_api(tmp / "serving" / "movielens" / "1",
                              {"user_id": users, "item_id": items}, tmp_path)
    assert info["tensorflow_imported"] is False
    assert set(info["signature"]["inputs"]) == {"user_id", "item_id"}
    model = keras.models.load_model(model_path)
    index = {u: i for i, u in enumerate(vocab["user"])}
    item_index = {u: i for i, u in enumerate(vocab["item"])}
    features = {
        "user": np.array([index.get(u, len(index)) for u in users], np.int32),
        "item": np.array([item_index.get(i, len(item_index)) for i in items], np.int32),
    }
    expected = model.predict(features, verbose=0).reshape(-1)
    np.testing.assert_allclose(outputs["rating"], expected, atol=1e-5)
    assert info["empty_shapes"] == {"rating": [0]}
    assert "user_id" in info["bad_shape_error"] or "item_id" in info["bad_shape_error"]
    check_stock_ops(tmp / "serving" / "movielens" / "1")


def test_versions_never_overwrite_and_warmup_and_config(movielens_export):
    tmp, model_path = movielens_export
    export(model_path, tmp / "serving", "movielens")
    versions = sorted(p.name for p in (tmp / "serving" / "movielens").iterdir())
    assert versions[:2] == ["1", "2"] and not any(v.startswith(".") for v in versions)
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_version(tmp / "serving", "movielens", lambda p: p.mkdir(), version=1)
    warmup = tmp / "serving" / "movielens" / "2" / "assets.extra" / \
        "tf_serving_warmup_requests"
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(str(warmup)).as_numpy_iterator())
    assert len(records) == 10
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    assert set(log.predict_log.request.inputs) == {"user_id", "item_id"}
    config = (tmp / "serving" / "models.config").read_text()
    assert 'name: "movielens"' in config and 'base_path: "/models/movielens"' in config


def test_failed_write_leaves_no_version(tmp_path):
    def broken(path):
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_version(tmp_path, "m", broken)
    assert list((tmp_path / "m").iterdir()) == []


def test_criteo_export_matches_keras_through_the_c_api(tmp_path):
    cardinalities = [50, 400, 3000, 7, 2] + [20] * 21
    data = tmp_path / "train.txt"
    SyntheticCriteo(3000, cardinalities, seed=0).write_raw(data)
    model_path = tmp_path / "dlrm.keras"
    run([ROOT / "examples" / "criteo.py", "--data", data, "--vocab-dir",
         tmp_path / "vocab", "--embedding", "block", "--dim", "8", "--bottom", "32",
         "--top", "32", "--epochs", "1", "--verbose", "0", "--save", model_path])
    export(model_path, tmp_path / "serving", "criteo")
    lines = data.read_text().splitlines()[:40]
    fields = [line.split("\t") for line in lines]
    dense = np.array([[float(v) if v else np.nan for v in f[1:14]] for f in fields],
                     np.float32)
    dense[0, :3] = [np.nan, -7, 0]  # missing and negative values
    categorical = np.array([f[14:] for f in fields], dtype="S8")
    categorical[1, :] = b"ffffffff"  # unknown values -> OOV buckets
    categorical[2, :] = b""
    outputs, info = run_c_api(tmp_path / "serving" / "criteo" / "1",
                              {"dense": dense, "categorical": categorical}, tmp_path)
    assert info["tensorflow_imported"] is False
    assert "must have shape" in info["bad_shape_error"]
    assert info["empty_shapes"] == {"probability": [0]}
    model = keras.models.load_model(model_path)
    vocabulary = CriteoVocabulary.load(tmp_path / "dlrm.vocab")
    ids = CriteoLookup(vocabulary)(tf.constant(categorical)).numpy()
    features = {"dense": np.log1p(np.maximum(np.nan_to_num(dense), 0)), "categorical": ids}
    expected = model.predict(features, verbose=0).reshape(-1)
    np.testing.assert_allclose(outputs["probability"], expected, atol=1e-5)
    check_stock_ops(tmp_path / "serving" / "criteo" / "1")
