"""SparseRowOptimizer under MirroredStrategy over 2 logical CPUs, against one
device on the same global batches, for each table optimizer. Prints JSON:
every model and optimizer variable before and after, both runs, whether the
replicas' copies agree, and the gradient types the table updates received."""

import json, os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer
from keras_mixed_dim.planning import Block, BlockPlan

USERS, ITEMS, BATCH, STEPS = 60, 2200, 64, 4
# block 0 is small (the layer differentiates it densely), block 1 is not
PLAN = BlockPlan(ITEMS, 8, [Block(0, 100, 8), Block(100, ITEMS, 8)])
GRADIENT_TYPES = []
_update_table = SparseRowOptimizer._update_table


def recording_update_table(self, grad, variable, *args):
    GRADIENT_TYPES.append((variable.path, type(grad).__name__))  # at trace time
    return _update_table(self, grad, variable, *args)


SparseRowOptimizer._update_table = recording_update_table


def data():
    rng = np.random.default_rng(0)
    # rows 40.. of the users, 50..99 and 1500.. of the items are never used
    users = rng.integers(0, 40, size=BATCH * STEPS)
    items = np.where(rng.random(BATCH * STEPS) < 0.3, rng.integers(0, 50, BATCH * STEPS),
                     rng.integers(100, 1500, BATCH * STEPS))
    ids = np.stack([users, items], axis=1).astype("int32")
    target = np.sin(ids.sum(axis=1, keepdims=True)).astype("float32")
    return ids, target


def build(kind):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,), dtype="int32")
    user = keras.layers.Embedding(USERS, 8, name="users")(inputs[:, 0])
    item = MixedDimEmbedding(ITEMS, 8, plan=PLAN, name="items")(inputs[:, 1])
    hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(
        keras.layers.Concatenate()([user, item]))
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))
    optimizer = SparseRowOptimizer(keras.optimizers.SGD(0.05, name="dense"), table_optimizer=kind,
                                   table_learning_rate=0.1)
    model.compile(optimizer, "mse")
    optimizer.build(model.trainable_variables)
    return model


def values(model):
    out = {w.path: keras.ops.convert_to_numpy(w).tolist() for w in model.weights}
    for v in model.optimizer.variables:
        out["optimizer/" + v.path] = keras.ops.convert_to_numpy(v).tolist()
    return out


def replicas_equal(model):
    variables = list(model.weights) + list(model.optimizer.variables)
    return {v.path: all(np.array_equal(c.numpy(), v.value.values[0].numpy())
                        for c in v.value.values)
            for v in variables if hasattr(v.value, "values")}


ids, target = data()
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
results = {"replicas": strategy.num_replicas_in_sync, "ids": ids.tolist()}
for kind in sys.argv[1:] or ["sgd", "adagrad", "adam"]:
    single = build(kind)
    before = values(single)
    single.fit(ids, target, batch_size=BATCH, shuffle=False, verbose=0)
    with strategy.scope():
        mirrored = build(kind)
    assert values(mirrored) == before
    GRADIENT_TYPES.clear()
    mirrored.fit(ids, target, batch_size=BATCH, shuffle=False, verbose=0)
    results[kind] = {"before": before, "single": values(single),
                     "mirrored": values(mirrored),
                     "replicas_equal": replicas_equal(mirrored),
                     "gradients": sorted(set(GRADIENT_TYPES)),
                     "iterations": int(mirrored.optimizer.iterations.numpy())}
print(json.dumps(results))
