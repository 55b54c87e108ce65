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
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
from keras_mixed_dim.planning import Block, BlockPlan

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def train(layer, ids):
    """A model of `layer` built in the strategy's scope, fitted with
    FrequencyRecount; returns the callback."""
    with strategy.scope():
        inputs = keras.Input((ids.shape[1],), dtype="int32")
        model = keras.Model(inputs, keras.layers.Dense(1)(
            keras.layers.Flatten()(layer(inputs))))
        model.compile("adam", "mse")
    callback = FrequencyRecount()
    model.fit(ids, np.zeros((len(ids), 1)), epochs=2, batch_size=16, verbose=0,
              callbacks=[callback])
    return callback


ids = np.random.default_rng(0).integers(-2, 52, size=(96, 3)).astype("int32")
with strategy.scope():
    layer = MixedDimEmbedding(50, 4, count_frequencies=True, name="items")
callback = train(layer, ids)
# the same counting in a StackedEmbedding: feature 0 counts, feature 1 not
stacked_ids = np.stack([ids[:, 0], ids[:, 1] % 30], axis=1)
with strategy.scope():
    stacked = StackedEmbedding(
        [BlockPlan(50, 4, [Block(0, 10, 4), Block(10, 50, 2)], remapped=True), 30], 4,
        count_frequencies=[True, False], name="stacked")
stacked_callback = train(stacked, stacked_ids)
print(json.dumps({
    "stacked_ids": stacked_ids.tolist(),
    "stacked_counts": stacked.feature_counts(0).tolist(),
    "stacked_recounts": len(stacked_callback.reports),
    "stacked_remap": stacked.feature_ranks(0).tolist(),
    "replicas": strategy.num_replicas_in_sync,
    "counts": keras.ops.convert_to_numpy(layer.frequency_counts).tolist(),
    "ids": ids.tolist(),
    "recounts": len(callback.reports),
    "remap": keras.ops.convert_to_numpy(layer.remap).tolist(),
}))
