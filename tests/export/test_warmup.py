"""write_warmup_requests: the PredictionLog records TF Serving replays when
it loads a version, read back with TensorFlow's own record reader."""

import numpy as np
import tensorflow as tf

from keras_mixed_dim.export.warmup import write_warmup_requests


def test_requests_hold_the_inputs_for_the_serving_signature(tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    inputs = {"ids": np.array([[1, 2], [3, 4]], np.int32),
              "dense": np.array([[0.5], [-1.5]], np.float32)}
    path = write_warmup_requests(tmp_path, inputs, model_name="dlrm", copies=3)
    assert path == tmp_path / "assets.extra" / "tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert len(records) == 3
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == "dlrm"
        assert request.model_spec.signature_name == "serving_default"
        assert sorted(request.inputs) == ["dense", "ids"]
        for key, value in inputs.items():
            got = tf.make_ndarray(request.inputs[key])
            assert got.dtype == value.dtype
            np.testing.assert_array_equal(got, value)
