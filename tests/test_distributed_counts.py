"""Exact counting under tf.distribute.MirroredStrategy with two replicas.

Runs in a subprocess: the two logical CPU devices must be configured before
TensorFlow initializes, which the main test process has already done.
"""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_mixed_dim import FrequencyRecount, MixedDimEmbedding

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    ids = np.random.default_rng(0).integers(-2, 52, size=(96, 3)).astype("int32")
    with strategy.scope():
        layer = MixedDimEmbedding(50, 4, count_frequencies=True, name="items")
        inputs = keras.Input((3,), dtype="int32")
        model = keras.Model(inputs, keras.layers.Dense(1)(
            keras.layers.Flatten()(layer(inputs))))
        model.compile("adam", "mse")
    callback = FrequencyRecount()
    model.fit(ids, np.zeros((96, 1)), epochs=2, batch_size=16, verbose=0,
              callbacks=[callback])
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "counts": keras.ops.convert_to_numpy(layer.frequency_counts).tolist(),
        "ids": ids.tolist(),
        "recounts": len(callback.reports),
        "remap": keras.ops.convert_to_numpy(layer.remap).tolist(),
    }))
    """
)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tf.distribute needs the TensorFlow backend")
def test_counts_are_exact_with_two_mirrored_replicas():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    ids = np.array(out["ids"]).ravel()
    ids = ids[(ids >= 0) & (ids < 50)]
    expected = 2 * np.bincount(ids, minlength=50)  # two epochs
    np.testing.assert_array_equal(out["counts"], expected)
    assert out["recounts"] == 2
    # after re-ranking, rank order follows the counts (ties by earlier rank)
    ranks = np.array(out["remap"])
    by_rank = np.array(out["counts"])[np.argsort(ranks)]
    assert np.all(np.diff(by_rank) <= 0)
