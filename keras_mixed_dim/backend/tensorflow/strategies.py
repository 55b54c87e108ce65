"""tf.distribute strategies for `keras_mixed_dim.distribute` (TensorFlow-only
module)."""

import os

import tensorflow as tf

from keras_mixed_dim.backend.tensorflow.multiworker import enable_multiworker_fit


def strategy(kind):
    """A tf.distribute strategy: "mirrored" (GPUs of one host) or
    "multiworker" (hosts listed in the TF_CONFIG environment variable, with
    `enable_multiworker_fit` applied)."""
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--distribute multiworker needs TF_CONFIG (cluster and task).")
        enable_multiworker_fit()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"`kind` must be 'mirrored' or 'multiworker'. Received: {kind!r}")
