"""Every compressed embedding kind exports for TF Serving with stock ops and
serves the Keras model's predictions through the C API loader.

The models are small DLRMs (three categorical features) exported with the
generic `export_for_serving`: what is under test is each layer's serving
graph, not the Criteo preprocessing (tests/export/test_example_models.py
serves a 26-feature Criteo export). All exports go through one C API
process, since loading the C library dominates a small model's check.
"""

import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo
from keras_mixed_dim.export import export_for_serving
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
from keras_mixed_dim.models.dlrm import dlrm
from keras_mixed_dim.models.dlrm import embedding_layers

# One worker runs this file (.ci/run: --dist loadgroup): its module fixture
# is expensive and would be built again on every worker that ran a test.
pytestmark = pytest.mark.xdist_group("compressed_export")

# "stacked": the mixed-dimension ("table_blocks") tables in one StackedEmbedding;
# "stacked_table": per-table MD (one block per feature, dlrm's benchmark case),
# "stacked_table_batched" the same exported with the batched projection (the
# default takes the block-diagonal one where it fits its cap)
KINDS = ("qr", "md_qr", "hashing", "robe", "lma", "stacked", "stacked_table",
         "stacked_table_batched")
CARDINALITIES = [3000, 200, 40]


def graph_op_types(export_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((pathlib.Path(export_dir) / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    return ops


@pytest.fixture(scope="module")
def served(tmp_path_factory, run_python):
    """Trains and exports one DLRM per kind; serves all through one C API run.

    Returns `{kind: (export_dir, expected probabilities, served outputs,
    C API report)}`.
    """
    folder = tmp_path_factory.mktemp("compressed_export")
    dense, categorical, labels = SyntheticCriteo(512, CARDINALITIES, seed=0).arrays()
    dense, categorical = np.asarray(dense, np.float32), np.asarray(categorical, np.int32)
    ids = categorical[:32].copy()
    ids[0, 0] = -1  # an out-of-range id serves as zeros, like in Keras
    requests = {"dense": dense[:32], "categorical": ids}
    uniform_bytes = sum(CARDINALITIES) * 8 * 4
    exports, arguments = {}, []
    for kind in KINDS:
        if kind.startswith("stacked"):
            embeddings = embedding_layers(
                CARDINALITIES, 8, "table_blocks" if kind == "stacked" else "table",
                block_min_rows=100)
            model = dlrm(embeddings, 8, bottom=(16,), top=(16,), stacked=True)
            assert isinstance(model.get_layer("embeddings"), StackedEmbedding)
        else:
            embeddings = embedding_layers(CARDINALITIES, 8, kind,
                                          budget_bytes=uniform_bytes / 8)
            model = dlrm(embeddings, 8, bottom=(16,), top=(16,))
        model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
        model.fit({"dense": dense, "categorical": categorical}, labels, epochs=1,
                  batch_size=128, verbose=0)
        report = export_for_serving(
            model, folder / "serving", f"dlrm_{kind}", output_names="probability",
            fuse_stacked="batched" if kind == "stacked_table_batched" else True)
        if kind.startswith("stacked"):
            # served through the fused lookup: its copy of the tables and its
            # padded projections are what the report counts and the export saves
            layer = model.get_layer("embeddings")
            with layer.fused_for_serving("batched" if kind.endswith("_batched")
                                         else "auto") as fused:
                added = fused.added_bytes
                fused_shapes = [tuple(fused.table.shape), tuple(fused.projections.shape)]
            assert added > 0 and report.fused_added_bytes == added
            assert report.embedding_bytes == added + sum(
                int(np.prod(w.shape)) * 4 for w in layer.weights)
            # (the export names variables by position: known by their shapes)
            saved = [tuple(shape) for _, shape in tf.train.list_variables(
                str(report.path / "variables" / "variables"))]
            assert all(shape in saved for shape in fused_shapes), saved
            assert not any(tuple(t.shape) in saved for t in layer.tables), saved
        expected = model.predict(requests, verbose=0).reshape(-1)
        inputs_path, outputs_path = folder / f"{kind}_in.npz", folder / f"{kind}_out.npz"
        np.savez(inputs_path, **requests)
        arguments += [report.path, inputs_path, outputs_path]
        exports[kind] = (report.path, expected, outputs_path)
    stdout = run_python.program("capi_run.py", *arguments)
    reports = [json.loads(line) for line in stdout.strip().splitlines()[-len(KINDS):]]
    return {kind: (path, expected, dict(np.load(outputs)), capi_report)
            for (kind, (path, expected, outputs)), capi_report
            in zip(exports.items(), reports)}


@pytest.mark.parametrize("kind", KINDS)
def test_compressed_dlrm_serves_through_the_c_api(kind, served):
    from tensorflow.python.framework import op_def_registry

    export_dir, expected, outputs, report = served[kind]
    ops = graph_op_types(export_dir)
    assert not ops & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
    assert all(op_def_registry.get(op) is not None for op in ops), ops
    assert not report["tensorflow_imported"]
    assert sorted(report["signature"]["inputs"]) == ["categorical", "dense"], report
    np.testing.assert_allclose(outputs["probability"], expected, atol=1e-5)
    # a bad feed is an error, not a wrong answer
    assert report["errors"]["categorical"]["extra_axis"]

