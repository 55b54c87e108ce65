"""Counts lookups under MirroredStrategy with two replicas and re-ranks
with FrequencyRecount; prints counts and ranks as JSON."""

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
