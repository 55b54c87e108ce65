"""The serving-graph checks the export tests use (keras_mixed_dim.testing):
the ops a request runs, found through the functions the signature calls,
and the refusals of Python ops and of ops that write state."""

import pytest
import tensorflow as tf

from keras_mixed_dim.testing.savedmodel import check_serving_graph
from keras_mixed_dim.testing.savedmodel import serving_ops

SPEC = tf.TensorSpec((None,), tf.float32)


def saved(tmp_path, name, body):
    module = tf.Module()
    module.v = tf.Variable([1.0, 2.0, 3.0])
    module.serve = tf.function(lambda x: {"y": body(module, x)}, input_signature=[SPEC])
    path = tmp_path / name
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_ops_of_a_read_only_request_pass(tmp_path):
    def lookup(module, x):
        return tf.gather(module.v, tf.cast(x, tf.int32)) * 2.0

    path = saved(tmp_path, "read", lookup)
    ops = serving_ops(path)
    assert {"ResourceGather", "Cast", "Mul"} <= ops
    assert "SaveV2" not in ops and "RestoreV2" not in ops  # not the restore graph
    assert check_serving_graph(path) == ops


def test_a_request_that_writes_state_is_refused(tmp_path):
    def count(module, x):
        module.v.scatter_add(tf.IndexedSlices(x, tf.zeros_like(x, tf.int32)))
        return x

    path = saved(tmp_path, "writes", count)
    assert any(op.startswith("ResourceScatter") for op in serving_ops(path))
    with pytest.raises(AssertionError, match="writes state.*ResourceScatterAdd"):
        check_serving_graph(path)


def test_a_request_that_calls_python_is_refused(tmp_path):
    def python(module, x):
        return tf.numpy_function(lambda a: a + 1, [x], tf.float32)

    with pytest.raises(AssertionError, match="calls Python"):
        check_serving_graph(saved(tmp_path, "python", python))


def test_an_unknown_signature_is_an_error(tmp_path):
    path = saved(tmp_path, "read", lambda module, x: x + module.v[0])
    with pytest.raises(ValueError, match="No function behind the predict"):
        serving_ops(path, signature="predict")
