"""Trains on one device and under MirroredStrategy over 2 logical CPUs;
prints both loss histories and whether the replicas agree, as JSON."""

import json, os
os.environ["KERAS_BACKEND"] = "tensorflow"
import numpy as np
import tensorflow as tf
import keras
from keras_mixed_dim import MixedDimEmbedding

def data():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 400, size=(1024, 2)).astype("int32")
    return ids, np.sin(ids.sum(axis=1, keepdims=True)).astype("float32")

def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,), dtype="int32")
    layer = MixedDimEmbedding(400, 8, alpha=0.5, name="items")
    x = keras.layers.Flatten()(layer(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
ids, target = data()
single = build()
single_loss = single.fit(ids, target, batch_size=128, epochs=2, shuffle=False,
                         verbose=0).history["loss"]
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = build()
loss = model.fit(ids, target, batch_size=128, epochs=2, shuffle=False,
                 verbose=0).history["loss"]
same = all(
    all(np.array_equal(r.numpy(), v.value.values[0].numpy()) for r in v.value.values)
    for v in model.trainable_variables)
print(json.dumps({"single": single_loss, "mirrored": loss, "replicas_equal": same,
                  "replicas": strategy.num_replicas_in_sync}))
