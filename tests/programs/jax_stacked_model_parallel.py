"""Trains a model with one StackedEmbedding plain and under ModelParallel
with a LayoutMap regex on the stacked tables, on 4 JAX host devices, with
FrequencyRecount re-ranking the counting features at epoch ends; prints the
losses, the row shards and the re-ranked features as JSON."""

import json, os
os.environ["KERAS_BACKEND"] = "jax"
# appended: flags the caller set (.ci/run's faster XLA compiles) still hold
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"])
import keras, numpy as np
from keras import ops
from keras_mixed_dim import FrequencyRecount
from keras_mixed_dim.distribute import sharded_table_paths
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
from keras_mixed_dim.planning import Block, BlockPlan

CARDS = (400, 120, 800)
rng = np.random.default_rng(0)
ids = np.stack([rng.integers(0, n, size=2048) for n in CARDS], axis=1).astype("int32")
target = np.sin(ids[:, 0] % 97 + ids[:, 1] % 13).astype("float32")[:, None]


def train(layout):
    keras.distribution.set_distribution(None)
    keras.utils.set_random_seed(0)
    if layout:
        devices = keras.distribution.list_devices()
        mesh = keras.distribution.DeviceMesh((1, len(devices)), ("batch", "model"),
                                             devices)
        layout_map = keras.distribution.LayoutMap(mesh)
        layout_map[".*stacked_w.*_embeddings"] = ("model", None)
        keras.distribution.set_distribution(keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"))
    # widths 8 (400 + 120 + 40 rows) and 4p (360 + 800 rows): both split by 4
    features = [BlockPlan(400, 8, [Block(0, 40, 8), Block(40, 400, 4)], remapped=True),
                120, BlockPlan(800, 8, [Block(0, 800, 4)])]
    stacked = StackedEmbedding(features, 8, count_frequencies=[True, False, False],
                               name="stacked")
    inputs = keras.Input((3,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(1)(
        keras.layers.Flatten()(stacked(inputs))))
    model.compile(keras.optimizers.Adam(0.01), "mse")
    recount = FrequencyRecount()
    history = model.fit(ids, target, batch_size=256, epochs=3, shuffle=False,
                        verbose=0, callbacks=[recount])
    shards = {}
    for v in stacked.weights:
        shards[v.path] = [list(s.data.shape) for s in v.value.addressable_shards]
    moved = [r["stacked_feature0"].ids_moved for r in recount.reports]
    counts = stacked.feature_counts(0)
    return (history.history["loss"], shards, moved, float(counts.sum()),
            ops.convert_to_numpy(model.predict(ids[:64], verbose=0)).tolist(),
            sharded_table_paths([stacked], 4))


plain, _, plain_moved, plain_counts, plain_out, _ = train(False)
model_parallel, shards, moved, counts, out, paths = train(True)
print(json.dumps({"plain": plain, "model": model_parallel, "shards": shards,
                  "sharded_table_paths": paths,
                  "devices": len(keras.distribution.list_devices()),
                  "moved": moved, "plain_moved": plain_moved, "counts": counts,
                  "plain_counts": plain_counts, "out": out, "plain_out": plain_out}))
