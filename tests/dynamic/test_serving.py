"""Export of a model with DynamicEmbedding layers for TF Serving: the id map
as static tables over asset files, checked through the C API."""

import json

import keras
import numpy as np
import pytest

from keras_mixed_dim import DynamicEmbedding
from keras_mixed_dim.export import export_for_serving
from keras_mixed_dim.testing.savedmodel import check_serving_graph

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="SavedModel export needs TensorFlow")


def build():
    keras.utils.set_random_seed(3)
    users = DynamicEmbedding(8, 40_000, min_count=1, rebalance_every=2, name="users")
    items = DynamicEmbedding(8, 40_000, min_count=2, eviction="lru", name="items")
    inputs = {name: keras.Input((3,), dtype="int32", name=name) for name in ("user", "item")}
    x = keras.layers.Concatenate()([users(inputs["user"]), items(inputs["item"])])
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    return model, users, items


def train(model, users, items, user_ids, item_ids, y):
    x = {"user": users.update(user_ids, optimizer=model.optimizer),
         "item": items.update(item_ids, optimizer=model.optimizer)}
    model.fit(x, y, batch_size=len(y), verbose=0)


def test_an_export_mid_training_answers_as_the_model_did_then(run_python, tmp_path):
    from keras_mixed_dim.dynamic.serving import DynamicServing

    rng = np.random.default_rng(0)
    model, users, items = build()
    user_pool = np.array([2**40 + 1, -9, 2**31, 5, 2**63 - 1], np.int64)
    item_pool = np.array(["a", "b", "c", "dd"])
    for _ in range(3):
        train(model, users, items, rng.choice(user_pool, 16), rng.choice(item_pool, 16),
              rng.normal(size=(16, 1)))
    assert users.id_map.size and items.id_map.size
    probe_users = np.array([2**40 + 1, -9, 2**31, 77, -(2**63)], np.int64)  # 77: unseen
    probe_items = np.array(["a", "b", "zz", "c", "dd"])
    expected = model.predict({"user": users.lookup_ids(probe_users),
                              "item": items.lookup_ids(probe_items)}, verbose=0).ravel()
    preprocess = DynamicServing({"user": users, "item": items},
                                key_dtypes={"item": "string"})
    report = export_for_serving(model, tmp_path / "models", "dynamic",
                                preprocess=preprocess, output_names="score")
    check_serving_graph(report.path)
    assert report.assets_bytes > 0
    # training goes on: the map and the weights change, the export does not
    train(model, users, items, np.array([123, 456] * 8), np.array(["q", "r"] * 8),
          rng.normal(size=(16, 1)))
    now = model.predict({"user": users.lookup_ids(probe_users),
                         "item": items.lookup_ids(probe_items)}, verbose=0).ravel()
    assert not np.allclose(now, expected)
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs, user=probe_users, item=probe_items.astype(object).astype(bytes))
    stdout = run_python.program("capi_run.py", report.path, inputs, outputs)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert not result["tensorflow_imported"]
    served = dict(np.load(outputs))["score"]
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
