"""TF Serving warm-up requests: `assets.extra/tf_serving_warmup_requests`."""

import pathlib

import numpy as np
import tensorflow as tf


def write_warmup_requests(export_dir, inputs, model_name="model", copies=10):
    """Writes PredictionLog records that TF Serving replays when it loads.

    Args:
        export_dir: The SavedModel folder.
        inputs: `{input key: array}` for one request (batch dimension first).
        model_name: Model name put in the requests' ModelSpec.
        copies: How many requests to write (TF Serving caps replays at 1000).

    Returns:
        The path of the warmup file written.

    Example:

    >>> write_warmup_requests(report.path, {"user": np.array([1])})  # doctest: +SKIP
    """
    try:
        from tensorflow_serving.apis import predict_pb2
        from tensorflow_serving.apis import prediction_log_pb2
    except ImportError as error:
        raise ImportError(
            "Warm-up requests need the TF Serving protos: "
            'pip install "keras-mixed-dim[serving]"'
        ) from error
    folder = pathlib.Path(export_dir) / "assets.extra"
    folder.mkdir(parents=True, exist_ok=True)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serving_default"
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(str(folder / "tf_serving_warmup_requests")) as writer:
        for _ in range(copies):
            writer.write(log.SerializeToString())
    return folder / "tf_serving_warmup_requests"
