"""Trains one stacked DLRM with SparseRowOptimizer plain, ModelParallel and
DataParallel on 4 JAX host devices (the row train step under a
keras.distribution); prints the weights' largest differences, the dense
gradient warnings and the table shards as JSON."""

import json, os, warnings
os.environ["KERAS_BACKEND"] = "jax"
# appended: flags the caller set (.ci/run's faster XLA compiles) still hold
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"])
import keras, numpy as np
from keras_mixed_dim.distribute import jax_distribution, sharded_table_paths
from keras_mixed_dim.models.dlrm import dlrm, embedding_layers, stack_embeddings
from keras_mixed_dim.optimizers import SparseRowOptimizer

rng = np.random.default_rng(0)
n = 512
x = {"dense": rng.random((n, 2)).astype("float32"),
     "categorical": np.stack([rng.integers(0, 3000, n), rng.integers(0, 500, n),
                              rng.integers(0, 40, n)], 1).astype("int32")}
y = rng.integers(0, 2, (n, 1)).astype("float32")


def train(kind):
    keras.distribution.set_distribution(None)
    keras.utils.set_random_seed(0)
    # dlrm's default layout: one StackedEmbedding, made first for the layout map
    embeddings = [stack_embeddings(embedding_layers([40_000, 500, 40], 4, "table"))]
    if kind:
        jax_distribution(kind, embeddings)
    model = dlrm(embeddings[0], 4, bottom=(8,), top=(8,), num_dense=2, stacked=True)
    model.compile(SparseRowOptimizer(keras.optimizers.Adam(0.01), table_optimizer="adam",
                                     table_learning_rate=0.1), "binary_crossentropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=128, epochs=2, shuffle=False, verbose=0)
    dense = [str(w.message) for w in caught if "dense gradient" in str(w.message)]
    shards = {v.path: {"rows": v.shape[0],
                       "parts": [s.data.shape[0] for s in v.value.addressable_shards]}
              for v in model.weights if v.path in sharded_table_paths(embeddings, 4)}
    return [np.asarray(w) for w in model.get_weights()], dense, shards


plain, plain_dense, _ = train(None)
out = {"devices": len(keras.distribution.list_devices()), "dense_warnings": plain_dense}
for kind in ("model", "data"):
    weights, dense, shards = train(kind)
    out[kind] = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, plain))
    out["dense_warnings"] += dense
    out[f"{kind}_shards"] = shards
print(json.dumps(out))
