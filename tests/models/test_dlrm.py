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
