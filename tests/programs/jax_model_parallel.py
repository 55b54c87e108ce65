"""Trains one model plain, ModelParallel and DataParallel on 4 JAX host
devices; prints the losses and the row shards as JSON."""

import json, os
os.environ["KERAS_BACKEND"] = "jax"
# appended: flags the caller set (.ci/run's faster XLA compiles) still hold
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"])
import keras, numpy as np
from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.distribute import jax_distribution, sharded_table_paths

rng = np.random.default_rng(0)
items = rng.integers(0, 4000, size=(2048,)).astype("int32")
users = rng.integers(0, 1000, size=(2048,)).astype("int32")
target = np.sin(items % 97 + users % 13).astype("float32")[:, None]

def train(kind):
    keras.distribution.set_distribution(None)
    keras.utils.set_random_seed(0)
    layers = [MixedDimEmbedding(4000, 8, boundaries=[40, 400], alpha=0.5,
                                name="items"),
              keras.layers.Embedding(1000, 8, name="users")]
    if kind:
        jax_distribution(kind, layers)
    item = keras.Input((), dtype="int32", name="item")
    user = keras.Input((), dtype="int32", name="user")
    x = keras.layers.Concatenate()([layers[0](item), layers[1](user)])
    model = keras.Model({"item": item, "user": user}, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.Adam(0.01), "mse")
    history = model.fit({"item": items, "user": users}, target, batch_size=256,
                        epochs=3, shuffle=False, verbose=0)
    shards = {}
    for v in model.weights:
        if v.path in sharded_table_paths(layers, 4):
            shards[v.path] = [list(s.data.shape) for s in v.value.addressable_shards]
    return history.history["loss"], shards, len(keras.distribution.list_devices())

plain, _, devices = train(None)
model_parallel, shards, _ = train("model")
data_parallel, _, _ = train("data")
print(json.dumps({"plain": plain, "model": model_parallel, "data": data_parallel,
                  "shards": shards, "devices": devices}))
