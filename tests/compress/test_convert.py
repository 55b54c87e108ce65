"""`mixed_dim_from_embedding` (keras_mixed_dim/compress/convert.py): the
layer it builds from a Keras `Embedding` and its settings; the arithmetic is
tested in tests/planning/test_convert.py."""

import keras
import numpy as np
from keras import ops

from keras_mixed_dim.compress import mixed_dim_from_embedding
from keras_mixed_dim.layers import MixedDimEmbedding
from tests.helpers import embedding_with
from tests.helpers import shuffled_counts
from tests.helpers import trained_table


def test_alpha_zero_reproduces_the_embedding_exactly():
    weights = trained_table()
    embedding = embedding_with(weights, name="items")
    layer = mixed_dim_from_embedding(embedding, shuffled_counts(), alpha=0)
    assert isinstance(layer, MixedDimEmbedding) and layer.name == "items"
    ids = np.arange(600).reshape(20, 30)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(ids)), weights[ids])
    # out-of-range ids still give zeros, as for every MixedDimEmbedding
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(np.array([600, -1]))), 0)


def test_layer_settings_carry_over_and_saving_round_trips(tmp_path):
    weights = trained_table()
    embedding = embedding_with(weights, mask_zero=True, name="tokens")
    layer = mixed_dim_from_embedding(embedding, shuffled_counts(), budget_fraction=0.25)
    assert layer.mask_zero
    inputs = keras.Input((3,), dtype="int32")
    model = keras.Model(inputs, layer(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    ids = np.array([[0, 5, 599], [7, 8, 9]])
    np.testing.assert_allclose(ops.convert_to_numpy(reloaded(ids)),
                               ops.convert_to_numpy(model(ids)), atol=1e-6)


def test_every_argument_reaches_the_conversion():
    weights = trained_table()
    counts = np.sort(shuffled_counts())[::-1]
    kwargs = dict(alpha=0.4, num_blocks=3, budget_fraction=0.3, round_dims=True,
                  keep_id_order=True, name="ranked", return_report=True)
    layer, report = mixed_dim_from_embedding(weights, counts, **kwargs)
    expected, expected_report = MixedDimEmbedding.from_embedding(weights, counts, **kwargs)
    assert layer.name == "ranked" and layer.remap is None
    assert report.plan.dims == expected_report.plan.dims
    assert all(d & (d - 1) == 0 for d in report.plan.dims)
    ids = np.arange(600)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(ids)),
                                  ops.convert_to_numpy(expected(ids)))
