"""DLRM with uniform and mixed-dimension embeddings."""

import keras
import numpy as np
import pytest
from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo
from keras_mixed_dim.models.dlrm import dlrm
from keras_mixed_dim.models.dlrm import embedding_layers
from keras_mixed_dim.models.dlrm import table_dims
from keras_mixed_dim.planning import md_solver


def test_table_dims_follow_md_solver():
    dims = table_dims(KAGGLE_CARDINALITIES, 16, "table", alpha=0.3)
    np.testing.assert_array_equal(dims, md_solver(KAGGLE_CARDINALITIES, 0.3, base_dim=16))
    assert table_dims([10, 20], 8, "uniform") == [8, 8]


@pytest.mark.parametrize("mode", ["uniform", "table", "block"])
def test_dlrm_trains_in_each_embedding_mode(mode):
    cardinalities = [20_000, 500, 30, 3]
    generator = SyntheticCriteo(8192, cardinalities, seed=0)
    dense, categorical, labels = generator.arrays()
    embeddings = embedding_layers(cardinalities, 8, mode, alpha=0.3, block_min_rows=1000)
    if mode == "block":
        assert embeddings[0].plan.num_blocks == 4 and embeddings[1].plan.num_blocks == 1
    if mode != "uniform":
        assert all(isinstance(e, MixedDimEmbedding) for e in embeddings)
    model = dlrm(embeddings, 8, bottom=(32,), top=(32,))
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    history = model.fit({"dense": dense, "categorical": categorical}, labels,
                        epochs=3, batch_size=256, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    probabilities = model.predict({"dense": dense[:16], "categorical": categorical[:16]},
                                  verbose=0)
    assert probabilities.shape == (16, 1)
    assert np.all((probabilities > 0) & (probabilities < 1))


@pytest.mark.parametrize("mode", ["uniform", "table", "block"])
def test_every_id_of_every_table_has_its_own_vector(mode):
    # a training test only sees the loss fall; here every id must read a
    # non-zero row (a skipped block gives zeros for most ids)
    cardinalities = [20_000, 500, 30]
    counts = [np.random.default_rng(f).integers(1, 100, size=c)
              for f, c in enumerate(cardinalities)]
    embeddings = embedding_layers(cardinalities, 8, mode, alpha=0.3, counts=counts,
                                  block_min_rows=1000)
    for layer, rows in zip(embeddings, cardinalities):
        out = keras.ops.convert_to_numpy(layer(np.arange(rows)))
        assert out.shape == (rows, 8)
        assert np.all(np.abs(out).sum(axis=1) > 0), layer.name


def test_dlrm_output_depends_on_every_feature():
    cardinalities = [1000, 50, 7]
    embeddings = embedding_layers(cardinalities, 8, "block", alpha=0.3,
                                  block_min_rows=100)
    model = dlrm(embeddings, 8, bottom=(16,), top=(16,))
    dense = np.ones((1, 13), "float32")
    base = np.array([[3, 4, 5]], "int32")
    reference = model.predict({"dense": dense, "categorical": base}, verbose=0)
    for f in range(3):
        changed = base.copy()
        changed[0, f] += 1
        out = model.predict({"dense": dense, "categorical": changed}, verbose=0)
        assert not np.allclose(out, reference), f"feature {f} has no effect"
