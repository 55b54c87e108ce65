"""The C API loader's pieces that need no C library: the SignatureDef read
from the MetaGraphDef bytes by its small protobuf reader, checked against
TensorFlow's own parse, and the feed checks that name the bad input. (The
loader itself runs in the export tests, through tests/programs/capi_run.py.)"""

import numpy as np
import pytest
import tensorflow as tf

from keras_mixed_dim.testing.capi import _check_feed
from keras_mixed_dim.testing.capi import library_path
from keras_mixed_dim.testing.capi import read_signature


def saved_meta_graph(tmp_path):
    module = tf.Module()
    module.v = tf.Variable(2.0)
    module.serve = tf.function(
        lambda ids, words, dense: {"score": tf.cast(ids, tf.float32) * module.v,
                                   "n": tf.strings.length(words)},
        input_signature=[tf.TensorSpec((None,), tf.int64, name="ids"),
                         tf.TensorSpec((None, 3), tf.string, name="words"),
                         tf.TensorSpec((2, 5), tf.float32, name="dense")])
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((tmp_path / "saved_model.pb").read_bytes())
    return proto.meta_graphs[0]


def test_signature_read_from_the_bytes_equals_tensorflows_parse(tmp_path):
    meta = saved_meta_graph(tmp_path)
    signature = read_signature(meta.SerializeToString())
    expected = meta.signature_def["serving_default"]
    for side in ("inputs", "outputs"):
        infos = getattr(expected, side)
        assert sorted(signature[side]) == sorted(infos)
        for key, info in infos.items():
            dims = [d.size for d in info.tensor_shape.dim]
            assert signature[side][key] == {"name": info.name, "dtype": info.dtype,
                                             "shape": dims}, key
    assert signature["inputs"]["ids"]["shape"] == [-1]
    with pytest.raises(KeyError, match="No signature 'predict'.*serving_default"):
        read_signature(meta.SerializeToString(), "predict")


def test_feeds_of_the_wrong_dtype_or_shape_name_the_input(tmp_path):
    inputs = read_signature(saved_meta_graph(tmp_path).SerializeToString())["inputs"]
    _check_feed("ids", np.array([1, 2], np.int64), inputs["ids"])
    _check_feed("words", np.array([["a", "b", "c"]], object), inputs["words"])
    with pytest.raises(TypeError, match="Input `ids` must be int64; got int32"):
        _check_feed("ids", np.array([1, 2], np.int32), inputs["ids"])
    with pytest.raises(TypeError, match="Input `words`"):
        _check_feed("words", np.zeros((1, 3), np.float32), inputs["words"])
    with pytest.raises(ValueError, match=r"Input `ids` must have shape \(\?,\); got \(\)"):
        _check_feed("ids", np.array(3, np.int64), inputs["ids"])
    with pytest.raises(ValueError, match=r"`dense` must have shape \(2, 5\); got \(2, 4\)"):
        _check_feed("dense", np.zeros((2, 4), np.float32), inputs["dense"])


def test_the_c_library_is_found_in_the_wheel():
    path = library_path()
    assert path.name in ("libtensorflow_cc.so.2", "libtensorflow.so.2") and path.is_file()
