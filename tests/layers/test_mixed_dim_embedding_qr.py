"""MD + QR: mixed-dimension blocks stored as quotient-remainder pairs (the
plan's `storage="qr"`), on the current backend."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim import MixedDimEmbedding
from tests.helpers import mixed_dim_outputs
from tests.helpers import qr_plan


@pytest.fixture
def layer():
    layer = MixedDimEmbedding(3000, 8, plan=qr_plan(), counts=None)
    layer.build()
    return layer


def test_layer_weights_and_outputs(layer):
    names = [w.path.split("/")[-1] for w in layer.weights]
    for i, b in enumerate(layer.plan.blocks):
        if b.storage == "qr":
            assert f"block_{i}_quotient" in names and f"block_{i}_remainder" in names
            assert f"block_{i}_embeddings" not in names
        else:
            assert f"block_{i}_embeddings" in names
    trainable = sum(int(np.prod(v.shape)) for v in layer.trainable_variables)
    assert trainable == layer.plan.params
    ids = np.random.default_rng(1).integers(-2, 3002, size=(40, 3))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(ids)),
                               mixed_dim_outputs(layer, ids), atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(np.arange(3000))),
                               mixed_dim_outputs(layer, np.arange(3000)), atol=1e-6)


def test_keras_file_round_trip(layer, tmp_path):
    inputs = keras.Input((3,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(1)(
        keras.layers.Flatten()(layer(inputs))))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    ids = np.random.default_rng(2).integers(0, 3000, size=(16, 3))
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded(ids)),
                                  ops.convert_to_numpy(model(ids)))
    assert loaded.layers[1].plan == layer.plan


def test_training_reduces_the_loss(layer):
    rng = np.random.default_rng(3)
    # 200 distinct ids (from every block) seen ~10 times each: memorizable
    ids = rng.choice(rng.choice(3000, 200, replace=False), size=(2048, 1))
    target = np.sin(ids).astype("float32")
    inputs = keras.Input((1,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(1)(
        keras.layers.Flatten()(layer(inputs))))
    model.compile(keras.optimizers.Adam(0.02), "mse")
    losses = model.fit(ids, target, epochs=8, batch_size=128, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
