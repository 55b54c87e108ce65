"""LowRankCross (DCNv2's cross layer) against numpy and keras-rs, and
dlrm(interaction="dcnv2")."""

import keras
import numpy as np
import pytest

from keras_mixed_dim.models.cross import LowRankCross
from keras_mixed_dim.models.cross import cross_network


def numpy_cross(x0, layers):
    """x_{l+1} = x0 * (U (V x_l) + b) + x_l, the DCNv2 paper's eq. (1)
    with W = V U."""
    x = x0
    for down, up, bias in layers:
        x = x0 * ((x @ down) @ up + bias) + x
    return x


def test_three_cross_layers_match_numpy():
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(5, 12)).astype("float32")
    inputs = keras.Input((12,))
    model = keras.Model(inputs, cross_network(inputs, 3, 4))
    weights = []
    for i in range(3):
        layer = model.get_layer(f"cross_{i}")
        down, up, bias = (rng.normal(size=s).astype("float32") * 0.3
                          for s in ((12, 4), (4, 12), (12,)))
        layer.set_weights([down, up, bias])
        weights.append((down, up, bias))
    np.testing.assert_allclose(model.predict(x0, verbose=0), numpy_cross(x0, weights),
                               rtol=1e-5, atol=1e-5)


def test_one_layer_matches_numpy_and_its_config_round_trips():
    layer = LowRankCross(3, bias_initializer="ones", name="c")
    x0 = np.random.default_rng(1).normal(size=(4, 6)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x0))
    down, up, bias = layer.get_weights()
    np.testing.assert_allclose(y, numpy_cross(x0, [(down, up, bias)]), rtol=1e-5,
                               atol=1e-5)
    clone = LowRankCross.from_config(layer.get_config())
    assert clone.rank == 3 and clone.name == "c"
    with pytest.raises(ValueError, match="rank=0"):
        LowRankCross(0)


def test_matches_keras_rs_feature_cross():
    keras_rs = pytest.importorskip("keras_rs", reason="keras-rs needs Python >= 3.11")
    rng = np.random.default_rng(2)
    x0 = rng.normal(size=(3, 8)).astype("float32")
    x1 = rng.normal(size=(3, 8)).astype("float32")
    theirs = keras_rs.layers.FeatureCross(projection_dim=4)
    theirs(x0, x1)
    down, up, bias = (rng.normal(size=s).astype("float32")
                      for s in ((8, 4), (4, 8), (8,)))
    theirs.down_proj_dense.set_weights([down])
    theirs.dense.set_weights([up, bias])
    ours = LowRankCross(4)
    ours(x0, x1)
    ours.set_weights([down, up, bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x0, x1)),
                               keras.ops.convert_to_numpy(theirs(x0, x1)),
                               rtol=1e-5, atol=1e-5)


def test_dlrm_dcnv2_crosses_every_feature_and_refuses_unknown_interactions():
    from keras_mixed_dim.models.dlrm import dlrm

    tables = [keras.layers.Embedding(n, 4, name=f"embedding_{f}")
              for f, n in enumerate((10, 7))]
    model = dlrm(tables, 4, bottom=(8,), top=(8,), num_dense=3,
                 interaction="dcnv2", cross_layers=2, cross_rank=2)
    # bottom output and 2 features concatenated: 3 x 4 wide
    assert model.get_layer("cross_1").down_kernel.shape == (12, 2)
    out = model.predict({"dense": np.ones((2, 3), "float32"),
                         "categorical": np.array([[1, 2], [3, 4]], "int32")}, verbose=0)
    assert out.shape == (2, 1) and np.all((out > 0) & (out < 1))
    # the stacked layer's (batch, F, d) block crosses as the per-feature vectors do
    per_feature = dlrm(tables, 4, bottom=(8,), top=(8,), num_dense=3, stacked=False,
                       interaction="dcnv2", cross_layers=2, cross_rank=2)
    stacked = model.get_layer("embeddings")
    for f, table in enumerate(tables):
        table.embeddings.assign(stacked.feature_weights(f)[0][0])
    for layer in per_feature.layers:
        if layer.weights and not layer.name.startswith("embedding"):
            layer.set_weights(model.get_layer(layer.name).get_weights())
    np.testing.assert_allclose(per_feature.predict({"dense": np.ones((2, 3), "float32"),
                                                    "categorical": np.array([[1, 2], [3, 4]],
                                                                            "int32")},
                                                   verbose=0), out, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'dcn'"):
        dlrm(tables, 4, interaction="dcn")
