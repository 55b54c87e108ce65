"""The registry of embedding kinds: one name per kind, used by
make_embedding, the DLRM builder and compress_model."""

import dataclasses
import warnings

import keras
import numpy as np
import pytest

import keras_mixed_dim
from keras_mixed_dim.budgets import BudgetTooSmall
from keras_mixed_dim.compress import COMPRESSION_METHODS
from keras_mixed_dim.compress import compress_model
from keras_mixed_dim.models import dlrm as dlrm_module
from keras_mixed_dim.models import kinds
from keras_mixed_dim.models.dlrm import dlrm
from keras_mixed_dim.models.dlrm import embedding_layers
from keras_mixed_dim.models.embeddings import make_embedding
from keras_mixed_dim.models.kinds import EMBEDDING_KINDS
from keras_mixed_dim.models.kinds import get_kind
from keras_mixed_dim.models.kinds import kind_names
from keras_mixed_dim.planning import md_solver

CARDS = [3000, 200, 7]
DIM = 8


def test_each_name_is_one_kind_and_round_trips_through_the_builders():
    assert len(set(kind_names())) == len(kind_names())
    assert set(EMBEDDING_KINDS) <= set(kind_names())
    for name in EMBEDDING_KINDS:
        assert get_kind(name).name == name
        layer = make_embedding(name, 500, DIM,
                               budget_fraction=1.0 if name == "uniform" else 0.5)
        out = keras.ops.convert_to_numpy(layer(np.array([[0], [499]])))
        assert out.shape == (2, 1, DIM)
    with pytest.raises(ValueError, match="'blocks'.*'table_blocks'"):
        get_kind("blocks")


@pytest.mark.parametrize("name", EMBEDDING_KINDS)
def test_every_kind_of_a_dlrm_fits_its_budget(name):
    uniform = 4 * sum(CARDS) * DIM
    fraction = 1.0 if name == "uniform" else 0.25
    layers = embedding_layers(CARDS, DIM, name, budget_fraction=fraction,
                              block_min_rows=1000)
    assert [layer.name for layer in layers] == ["embedding_0", "embedding_1",
                                                "embedding_2"]
    nbytes = keras_mixed_dim.embedding_bytes(layers)
    assert nbytes <= fraction * uniform
    model = dlrm(layers, DIM, bottom=(8,), top=(8,))
    x = {"dense": np.zeros((2, 13), "float32"),
         "categorical": np.array([[0, 0, 0], [2999, 199, 6]], "int32")}
    assert model.predict(x, verbose=0).shape == (2, 1)
    # built, the layers hold what was counted before
    assert keras_mixed_dim.embedding_bytes(model) == nbytes


def test_a_dlrm_budget_below_the_smallest_layers_names_it_and_the_minimum():
    with pytest.raises(BudgetTooSmall, match=r"`budget_fraction`=0.001 .* which needs "
                       r"budget_fraction=") as caught:
        embedding_layers(CARDS, DIM, "qr", budget_fraction=0.001)
    # the minimum is a budget that works
    layers = embedding_layers(CARDS, DIM, "qr", budget_fraction=caught.value.minimum)
    assert keras_mixed_dim.embedding_bytes(layers) <= (
        caught.value.minimum * 4 * sum(CARDS) * DIM)


def test_old_names_keep_their_meaning_where_they_had_it_with_a_warning():
    with pytest.warns(DeprecationWarning, match="'block' is deprecated in "
                      "make_embedding.*'mixed'"):
        old = make_embedding("block", 500, DIM, budget_bytes=8000)
    assert old.plan == make_embedding("mixed", 500, DIM, budget_bytes=8000).plan
    with pytest.warns(DeprecationWarning, match="'block' is deprecated in dlrm.*"
                      "'table_blocks'"):
        old = embedding_layers(CARDS, DIM, "block", block_min_rows=1000)
    new = embedding_layers(CARDS, DIM, "table_blocks", block_min_rows=1000)
    assert [layer.plan for layer in old] == [layer.plan for layer in new]
    assert old[0].plan.num_blocks == 4 and old[1].plan.num_blocks == 1
    with pytest.warns(DeprecationWarning, match="mode"):
        embedding_layers(CARDS, DIM, mode="table")
    assert dlrm_module.EMBEDDING_MODES == EMBEDDING_KINDS


def test_deprecated_parameter_budgets_warn_and_give_the_same_layers():
    with pytest.warns(DeprecationWarning, match="md_solver's parameter budget"):
        old = embedding_layers(CARDS, DIM, "table", budget=4000)
    # DLRM's md_solver on the table parameters, as before
    expected = [int(min(d, DIM)) for d in md_solver(CARDS, 0.3, budget=4000)]
    assert [layer.plan.dims[0] for layer in old] == expected
    counts = np.random.default_rng(0).integers(1, 9, size=500)
    with pytest.warns(DeprecationWarning, match="make_embedding.*parameters"):
        old = make_embedding("mixed", 500, DIM, counts=counts, budget=1500)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = make_embedding("mixed", 500, DIM, counts=counts,
                             budget_bytes=4 * 1500 + 4 * 500)  # the remap on top
    assert old.plan == new.plan and old.plan.params <= 1500
    with pytest.raises(ValueError, match="budget_bytes=.*budget_fraction=0.5"):
        make_embedding("qr", 500, DIM, budget_bytes=1000, budget_fraction=0.5)
    with pytest.warns(DeprecationWarning), pytest.raises(
            ValueError, match="budget_bytes=.*budget=100"):
        embedding_layers(CARDS, DIM, "table", budget=100, budget_bytes=1000)


def _trained_model():
    keras.utils.set_random_seed(0)
    ids = keras.Input((1,), dtype="int32")
    # 16 wide: the id -> rank table takes 1/16 of the uniform bytes
    embedding = keras.layers.Embedding(2000, 16, name="items")
    model = keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(
        embedding(ids))))
    counts = {"items": np.random.default_rng(1).permutation(
        1.0 / np.arange(1, 2001))}
    return model, counts


def test_compress_model_converts_to_kinds_of_the_registry():
    model, counts = _trained_model()
    assert "mixed" in COMPRESSION_METHODS and "md" not in COMPRESSION_METHODS
    new, report = compress_model(model, counts, method="mixed", budget_fraction=0.25)
    assert report.layers[0].method == "mixed"
    assert report.layers[0].bytes_after <= 0.25 * 4 * 2000 * 16
    assert new.get_layer("items").bytes == report.layers[0].bytes_after
    with pytest.warns(DeprecationWarning, match="'md' is deprecated in compress_model"):
        _, old = compress_model(model, counts, method="md", budget_fraction=0.25)
    assert old.layers[0].method == "mixed"
    assert old.layers[0].details.plan == report.layers[0].details.plan
    with pytest.raises(ValueError, match="'qr' cannot be made from a trained table"):
        compress_model(model, counts, method="qr")


def test_compress_model_budgets_old_and_new():
    model, counts = _trained_model()
    with pytest.warns(DeprecationWarning, match=r"compress_model\(budget=.*fraction"):
        old_model, old = compress_model(model, counts, budget=0.25)
    new_model, new = compress_model(model, counts, budget_fraction=0.25)
    assert old.layers[0].details.plan == new.layers[0].details.plan
    for a, b in zip(old_model.get_layer("items").get_weights(),
                    new_model.get_layer("items").get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.warns(DeprecationWarning, match="budget_bytes=24000"):
        _, old = compress_model(model, counts, budget=24000)
    _, new = compress_model(model, counts, budget_bytes=24000)
    assert old.layers[0].details.plan == new.layers[0].details.plan
    assert new.layers[0].bytes_after <= 24000
    with pytest.raises(ValueError, match="budget_bytes=24000, budget_fraction=0.5"):
        compress_model(model, counts, budget_bytes=24000, budget_fraction=0.5)
    with pytest.raises(ValueError, match="budget_fraction=0.05 gives layer 'items'"):
        compress_model(model, counts, budget_fraction=0.05)


def test_a_built_in_kind_cannot_be_replaced_by_other_layers():
    qr = kinds.get_kind("qr")
    with pytest.raises(ValueError, match="'qr' is a kind of the package"):
        kinds.register_kind(dataclasses.replace(qr, build=lambda *a, **k: None))
    assert kinds.get_kind("qr") is qr
    # its converter may change (compress.register_method does that)
    kinds.register_kind(dataclasses.replace(qr, convert=None))
    kinds.register_kind(qr)
