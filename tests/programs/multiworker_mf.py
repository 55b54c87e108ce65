"""An MF model with a mixed-dim item table and SGD, trained on two
MultiWorkerMirroredStrategy workers (TF_CONFIG set) or one process; prints
RESULT {json} with losses, evaluation and weights (and optimizer variables).

`multiworker_mf.py KIND` updates the tables with SparseRowOptimizer's KIND
("sgd", "adagrad" or "adam") instead of Keras's SGD."""

import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras
from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.distribute import strategy_scope
from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer

TABLE_LR = {"sgd": 5.0, "adagrad": 0.5, "adam": 0.05}
kind = sys.argv[1] if len(sys.argv) > 1 else None

rng = np.random.default_rng(0)
items = rng.zipf(1.3, size=1024).astype("int64") % 600
users = rng.integers(0, 50, size=1024)
target = (np.sin(items % 7) + np.cos(users % 5)).astype("float32")[:, None]
counts = np.bincount(items, minlength=600)
multiworker = "TF_CONFIG" in os.environ
# the strategy first: it configures collective ops before any TF op runs
with strategy_scope("multiworker" if multiworker else None):
    keras.utils.set_random_seed(0)
    user = keras.Input((), dtype="int64", name="user")
    item = keras.Input((), dtype="int64", name="item")
    u = keras.layers.Embedding(50, 8, name="users")(user)
    v = MixedDimEmbedding(600, 8, counts=counts, num_blocks=3, alpha=0.4,
                          name="items")(item)
    # (batch, 1) predictions: Keras skips the per-replica loss scaling
    # when a 1-D output makes the loss a scalar before its reduction
    model = keras.Model({"user": user, "item": item},
                        keras.ops.sum(u * v, axis=-1, keepdims=True))
    optimizer = keras.optimizers.SGD(5.0)
    if kind:
        optimizer = SparseRowOptimizer(optimizer, table_optimizer=kind,
                                       table_learning_rate=TABLE_LR[kind])
    model.compile(optimizer, "mse", metrics=["mae"])
data = tf.data.Dataset.from_tensor_slices(
    ({"user": users, "item": items}, target)).batch(128)
history = model.fit(data, epochs=4, verbose=0)
evaluation = model.evaluate(data, verbose=0, return_dict=True)
print("RESULT " + json.dumps({
    "loss": history.history["loss"], "mae": history.history["mae"],
    "evaluation": evaluation,
    "weights": {w.path: np.asarray(w).ravel().tolist() for w in model.weights},
    "optimizer": {v.path: np.asarray(v).ravel().tolist()
                  for v in model.optimizer.variables},
}))
