import keras
import numpy as np
import pytest

from keras_mixed_dim.compress import COMPRESSION_METHODS
from keras_mixed_dim.compress import compress_model
from keras_mixed_dim.compress import register_method
from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.models.kinds import unregister_kind
from keras_mixed_dim.models.recommenders import matrix_factorization

USERS, ITEMS, DIM = 1200, 1500, 16


def trained_mf(seed=0):
    keras.utils.set_random_seed(seed)
    model = matrix_factorization(
        USERS, ITEMS, keras.layers.Embedding(USERS, DIM, name="user_embedding"),
        keras.layers.Embedding(ITEMS, DIM, name="item_embedding"), global_mean=3.5,
    )
    rng = np.random.default_rng(seed)
    # random, non-zero biases so that copying them is observable
    for name, rows in (("user_bias", USERS), ("item_bias", ITEMS)):
        model.get_layer(name).set_weights([rng.normal(size=(rows, 1)).astype("float32")])
    return model


def counts_for(rows, seed):
    return np.random.default_rng(seed).permutation(1.0 / np.arange(1, rows + 1))


def inputs(n=64, seed=1):
    rng = np.random.default_rng(seed)
    return {"user": rng.integers(0, USERS, n).astype("int32"),
            "item": rng.integers(0, ITEMS, n).astype("int32")}


COUNTS = {"user_embedding": counts_for(USERS, 0), "item_embedding": counts_for(ITEMS, 1)}


def test_alpha_zero_model_predicts_exactly_and_other_weights_are_copied():
    model = trained_mf()
    new_model, report = compress_model(model, COUNTS, budget_fraction=None, alpha=0)
    assert new_model is not model
    for name in ("user_embedding", "item_embedding"):
        assert isinstance(new_model.get_layer(name), MixedDimEmbedding)
        assert type(model.get_layer(name)) is keras.layers.Embedding  # untouched
    for name in ("user_bias", "item_bias"):
        np.testing.assert_array_equal(new_model.get_layer(name).get_weights()[0],
                                      model.get_layer(name).get_weights()[0])
    x = inputs()
    np.testing.assert_allclose(new_model.predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    assert [layer.name for layer in report.layers] == ["user_embedding", "item_embedding"]


def test_budget_report_and_save_reload(tmp_path):
    model = trained_mf()
    new_model, report = compress_model(model, COUNTS, budget_fraction=0.25)
    for entry in report.layers:
        layer = new_model.get_layer(entry.name)
        assert entry.bytes_before == entry.input_dim * DIM * 4
        assert entry.bytes_after == sum(int(np.prod(w.shape)) * 4 for w in layer.weights)
        assert entry.bytes_after <= 0.25 * entry.bytes_before
        assert len(entry.details.blocks) == layer.plan.num_blocks
    text = str(report)
    assert "user_embedding" in text and "block 0" in text
    path = tmp_path / "compressed.keras"
    new_model.save(path)
    reloaded = keras.saving.load_model(path)
    x = inputs()
    np.testing.assert_allclose(reloaded.predict(x, verbose=0),
                               new_model.predict(x, verbose=0), atol=1e-6)
    # the compressed model still trains
    new_model.compile(optimizer="adam", loss="mse")
    new_model.fit(x, np.ones(64), epochs=1, verbose=0)


def test_sequential_models_and_selection_by_size():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4,), dtype="int32"),
        keras.layers.Embedding(3000, 8, name="big"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, name="head"),
    ])
    model.build((None, 4))
    small_model = keras.Sequential([
        keras.Input((2,), dtype="int32"), keras.layers.Embedding(50, 8, name="small")])
    new_model, _ = compress_model(model, {"big": counts_for(3000, 2)},
                                       budget_fraction=None, alpha=0)
    assert isinstance(new_model, keras.Sequential)
    ids = np.random.default_rng(0).integers(0, 3000, (5, 4))
    np.testing.assert_allclose(new_model.predict(ids, verbose=0),
                               model.predict(ids, verbose=0), atol=1e-6)
    np.testing.assert_array_equal(new_model.get_layer("head").get_weights()[0],
                                  model.get_layer("head").get_weights()[0])
    with pytest.raises(ValueError, match="min_rows"):
        compress_model(small_model, {"small": np.ones(50)})
    # named explicitly, a small table is converted
    _, report = compress_model(small_model, {"small": np.arange(50.0)},
                               budget_fraction=None, layer_names="small")
    assert report.layers[0].name == "small"


def test_registered_methods_plug_in():
    calls = []

    def keep(layer, counts, budget_bytes, options):
        calls.append((layer.name, budget_bytes, options))
        clone = keras.layers.Embedding.from_config(layer.get_config())
        clone.build()
        clone.set_weights(layer.get_weights())
        return clone, layer.input_dim * layer.output_dim * 4, None

    register_method("keep", keep)
    try:
        model = trained_mf()
        new_model, report = compress_model(model, COUNTS, method="keep",
                                           budget_fraction=0.5, foo=1)
        # each converter gets its layer's share in bytes
        assert calls == [("user_embedding", 0.5 * 4 * USERS * DIM, {"foo": 1}),
                         ("item_embedding", 0.5 * 4 * ITEMS * DIM, {"foo": 1})]
        assert [entry.method for entry in report.layers] == ["keep", "keep"]
        x = inputs()
        np.testing.assert_allclose(new_model.predict(x, verbose=0),
                                   model.predict(x, verbose=0), atol=1e-6)
    finally:
        unregister_kind("keep")
    assert "keep" not in COMPRESSION_METHODS


def test_bad_inputs():
    model = trained_mf()
    with pytest.raises(ValueError, match="no keras.layers.Embedding"):
        dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        compress_model(dense, {})
    with pytest.raises(ValueError, match="No counts for layer"):
        compress_model(model, {"user_embedding": COUNTS["user_embedding"]})
    with pytest.raises(ValueError, match="Unknown compression method 'svd'"):
        compress_model(model, COUNTS, method="svd")
    with pytest.raises(ValueError, match="'dot' is not an Embedding"):
        compress_model(model, COUNTS, layer_names=["dot"])
    with pytest.raises(ValueError, match="1200 entries|input_dim is 1200"):
        compress_model(model, {**COUNTS, "user_embedding": np.ones(5)})
    with pytest.raises(ValueError, match="dict"):
        compress_model(model, [1, 2])

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.embedding = keras.layers.Embedding(2000, 4)

        def call(self, x):
            return self.embedding(x)

    sub = Sub()
    sub(np.zeros((1, 2), "int32"))
    with pytest.raises(ValueError, match="subclassed"):
        compress_model(sub, {})


def test_a_stacked_dlrm_compresses_as_its_per_feature_twin(tmp_path):
    from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
    from keras_mixed_dim.models.dlrm import dlrm

    cards = [3000, 1200, 20]
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Embedding(c, 8, name=f"embedding_{f}")
              for f, c in enumerate(cards)]
    per_feature = dlrm(layers, 8, bottom=(16,), top=(16,), stacked=False)
    stacked = dlrm(layers, 8, bottom=(16,), top=(16,))  # takes the built tables
    assert isinstance(stacked.get_layer("embeddings"), StackedEmbedding)
    for layer in stacked.layers:
        if layer.name.startswith(("bottom", "top", "probability")):
            layer.set_weights(per_feature.get_layer(layer.name).get_weights())
    rng = np.random.default_rng(0)
    x = {"dense": rng.random((64, 13)).astype("float32"),
         "categorical": rng.integers(0, cards, size=(64, 3)).astype("int32")}
    counts = {f"embedding_{f}": counts_for(c, f) for f, c in enumerate(cards)}
    for options in ({"budget_fraction": None, "alpha": 0}, {"budget_fraction": 0.5}):
        ours, report = compress_model(stacked, counts, **options)
        theirs, their_report = compress_model(per_feature, counts, **options)
        # min_rows=1000 picks the two big features, by their feature names
        assert [e.name for e in report.layers] == ["embedding_0", "embedding_1"]
        assert [e.bytes_after for e in report.layers] == [
            e.bytes_after for e in their_report.layers]
        new_stacked = ours.get_layer("embeddings")
        assert isinstance(new_stacked, StackedEmbedding)
        for f in (0, 1):
            assert new_stacked.plans[f] == theirs.get_layer(f"embedding_{f}").plan
        assert new_stacked.plans[2] == stacked.get_layer("embeddings").plans[2]
        np.testing.assert_allclose(ours.predict(x, verbose=0),
                                   theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
        if options["budget_fraction"] is None:  # alpha 0: exactly the original model
            np.testing.assert_allclose(ours.predict(x, verbose=0),
                                       stacked.predict(x, verbose=0), atol=1e-6)
    path = tmp_path / "compressed.keras"
    ours.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0),
                               ours.predict(x, verbose=0), atol=1e-6)


def test_min_rows_selects_tables_of_exactly_that_many_rows():
    model = trained_mf()
    _, report = compress_model(model, COUNTS, min_rows=USERS, budget_fraction=0.5)
    assert [e.name for e in report.layers] == ["user_embedding", "item_embedding"]
    _, report = compress_model(model, COUNTS, min_rows=USERS + 1, budget_fraction=0.5)
    assert [e.name for e in report.layers] == ["item_embedding"]


def test_a_stacked_dlrm_of_bags_keeps_its_bags_when_compressed():
    from keras_mixed_dim.models.dlrm import dlrm

    cards, sizes = [2000, 30], [4, 2]
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Embedding(c, 8, name=f"embedding_{f}")
              for f, c in enumerate(cards)]
    model = dlrm(layers, 8, bottom=(8,), top=(8,), bag_sizes=sizes, bag_combiner="sqrtn",
                 bag_weights=True)
    rng = np.random.default_rng(0)
    categorical = np.concatenate([rng.integers(-1, c, size=(32, k)) for c, k
                                  in zip(cards, sizes)], axis=1).astype("int32")
    x = {"dense": rng.random((32, 13)).astype("float32"), "categorical": categorical,
         "categorical_weights": rng.uniform(0.5, 2, (32, 6)).astype("float32")}
    counts = {"embedding_0": counts_for(2000, 0)}
    exact, _ = compress_model(model, counts, budget_fraction=None, alpha=0)
    stacked = exact.get_layer("embeddings")
    assert stacked.bag_sizes == (4, 2) and stacked.combiner == "sqrtn"
    assert stacked.plans[0].remapped  # really converted
    np.testing.assert_allclose(exact.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


@pytest.mark.parametrize("budget", ["abc", [0.5], float("nan"), -1, True])
def test_deprecated_budget_bad_value_is_named(budget):
    # the deprecation warning's text compared `budget` with 1 before it was
    # checked: a string or list raised a TypeError naming nothing
    inp = keras.Input((1,), dtype="int32")
    model = keras.Model(inp, keras.layers.Embedding(100, 8, name="emb")(inp))
    with pytest.raises(ValueError, match=r"Received: budget=" + repr(budget)[:3].replace("[", r"\[")):
        compress_model(model, {"emb": np.ones(100)}, budget=budget)
