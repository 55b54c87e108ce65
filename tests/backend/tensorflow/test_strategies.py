"""`strategy(kind)`: the tf.distribute strategy asked for, or an error naming
what is missing or wrong."""

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="a TensorFlow-only module")


def test_mirrored_is_a_mirrored_strategy():
    import tensorflow as tf

    from keras_mixed_dim.backend.tensorflow.strategies import strategy

    made = strategy("mirrored")
    assert isinstance(made, tf.distribute.MirroredStrategy)
    assert made.num_replicas_in_sync >= 1


def test_multiworker_without_tf_config_and_unknown_kinds_are_refused(monkeypatch):
    from keras_mixed_dim.backend.tensorflow.strategies import strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        strategy("multiworker")
    with pytest.raises(ValueError, match="'tpu'"):
        strategy("tpu")
