"""StackedEmbedding equals the per-feature layers it replaces, on the active
backend (TensorFlow by default; run with KERAS_BACKEND=jax / torch too)."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.layers import stacked_embedding
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
from keras_mixed_dim.layers.stacked_embedding import uniform_plan
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan

DIM = 8


def _per_feature_layers():
    rng = np.random.default_rng(0)
    return [
        keras.layers.Embedding(50, DIM, name="uniform"),
        MixedDimEmbedding(300, DIM, plan=BlockPlan(
            300, DIM, [Block(0, 20, 8), Block(20, 100, 4), Block(100, 300, 2)]), name="md"),
        MixedDimEmbedding(100, DIM, plan=BlockPlan(100, DIM, [Block(0, 100, 4)]),
                          name="table_dim"),
        # same width twice in one feature: two lanes
        MixedDimEmbedding(40, DIM, plan=BlockPlan(
            40, DIM, [Block(0, 10, 4), Block(10, 40, 4)]), name="lanes"),
        MixedDimEmbedding(200, DIM, counts=rng.integers(0, 100, 200), num_blocks=3,
                          alpha=0.5, count_frequencies=True, name="remapped"),
    ]


def _ids(rng, layers, batch=64):
    cards = np.array([layer.input_dim for layer in layers])
    ids = rng.integers(0, cards, size=(batch, len(cards)))
    # out-of-range ids of every kind, per feature
    ids[0] = -1
    ids[1] = cards
    ids[2, 0] = 10**6
    ids[3, 0] = cards[0] + 10  # invalid for feature 0, valid for feature 1
    return ids.astype("int32")


def _built(layers, ids):
    for f, layer in enumerate(layers):
        layer(np.clip(ids[:, f], 0, layer.input_dim - 1))
    return layers


def _reference(layer, ids):
    """The per-feature layer's output; `keras.layers.Embedding` raises on bad
    ids on TensorFlow, so its reference is its table in numpy with the id rule."""
    if isinstance(layer, MixedDimEmbedding):
        return ops.convert_to_numpy(layer(ids))
    table = ops.convert_to_numpy(layer.embeddings)
    valid = (ids >= 0) & (ids < table.shape[0])
    return np.where(valid[:, None], table[np.clip(ids, 0, table.shape[0] - 1)], 0.0)


def test_equals_per_feature_layers():
    rng = np.random.default_rng(1)
    layers = _per_feature_layers()
    ids = _ids(rng, layers)
    _built(layers, ids)
    for layer in layers:  # random projections and remaps, not just identity
        if hasattr(layer, "remap") and layer.remap is not None:
            layer.remap.assign(rng.permutation(layer.input_dim).astype("int32"))
    expected = np.stack([_reference(layer, ids[:, f])
                         for f, layer in enumerate(layers)], axis=1)
    stacked = StackedEmbedding.from_layers(layers)
    got = ops.convert_to_numpy(stacked(ids))
    assert got.shape == (64, len(layers), DIM)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[:2], 0.0)
    np.testing.assert_array_equal(got[2, 0], 0.0)
    np.testing.assert_array_equal(got[3, 0], 0.0)
    assert np.all(got[3, 1] != 0)
    names = {v.name for v in stacked.tables}
    assert {"stacked_w8_embeddings", "stacked_w4p_embeddings",
            "stacked_w4p_l1_embeddings", "stacked_w2p_embeddings"} <= names
    assert len(stacked.tables) < sum(len(getattr(l, "block_embeddings", [0]))
                                     for l in layers)
    # one gather per distinct table, all features
    total_rows = sum(int(t.shape[0]) for t in stacked.tables)
    assert total_rows == sum(l.input_dim for l in layers)


def test_feature_weights_read_back_the_layers():
    layers = _per_feature_layers()
    ids = _ids(np.random.default_rng(2), layers)
    _built(layers, ids)
    stacked = StackedEmbedding.from_layers(layers)
    tables, projections = stacked.feature_weights(1)
    for got, layer_table in zip(tables, layers[1].block_embeddings):
        np.testing.assert_array_equal(got, ops.convert_to_numpy(layer_table))
    for got, layer_projection in zip(projections, layers[1].block_projections):
        if layer_projection is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, ops.convert_to_numpy(layer_projection))
    (table,), (projection,) = stacked.feature_weights(0)
    np.testing.assert_array_equal(table, ops.convert_to_numpy(layers[0].embeddings))
    assert projection is None


def test_uniform_stack_equals_embeddings():
    layers = [keras.layers.Embedding(n, 4) for n in (7, 30, 1)]
    ids = np.array([[0, 29, 0], [6, 0, 1], [7, -3, 0]], dtype="int32")
    _built(layers, ids.clip(0, 0))
    stacked = StackedEmbedding.from_layers(layers)
    assert len(stacked.tables) == 1 and stacked.tables[0].shape == (38, 4)
    got = ops.convert_to_numpy(stacked(ids))
    for f, layer in enumerate(layers):
        table = ops.convert_to_numpy(layer.embeddings)
        for b in range(3):
            valid = 0 <= ids[b, f] < table.shape[0]
            np.testing.assert_array_equal(
                got[b, f], table[ids[b, f]] if valid else np.zeros(4, "float32"))


def test_out_of_range_ids_get_no_gradient():
    stacked = StackedEmbedding([5, BlockPlan(20, 4, [Block(0, 5, 4), Block(5, 20, 2)])], 4)
    ids = keras.Input((2,), dtype="int32")
    model = keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(stacked(ids))))
    model.compile(keras.optimizers.SGD(1.0), loss="mse")
    before = [ops.convert_to_numpy(w).copy() for w in stacked.weights]
    bad = np.array([[-1, 20], [5, -7], [10**9, 25]], dtype="int64")
    model.train_on_batch(bad, np.ones((3, 1), "float32"))
    for old, new in zip(before, stacked.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(new), old)
    model.train_on_batch(np.array([[1, 6]], "int32"), np.ones((1, 1), "float32"))
    changed = [np.any(ops.convert_to_numpy(n) != o) for o, n in zip(before, stacked.weights)]
    assert any(changed)


def test_float_and_string_ids():
    stacked = StackedEmbedding([5, 6], 2)
    out = ops.convert_to_numpy(stacked(np.array([[1.0, np.nan], [2.5, 6.0]])))
    np.testing.assert_array_equal(out[0, 1], 0.0)
    np.testing.assert_array_equal(out[1], 0.0)
    assert np.any(out[0, 0] != 0)
    with pytest.raises(TypeError, match="integer ids"):
        stacked(np.array([["a", "b"]]))


def test_config_and_keras_file_round_trip(tmp_path):
    layers = _per_feature_layers()
    ids = _ids(np.random.default_rng(3), layers)
    _built(layers, ids)
    stacked = StackedEmbedding.from_layers(layers, name="stacked")
    inputs = keras.Input((len(layers),), dtype="int32")
    model = keras.Model(inputs, stacked(inputs))
    expected = ops.convert_to_numpy(model(ids))
    path = tmp_path / "stacked.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded(ids)), expected)
    clone = StackedEmbedding.from_config(stacked.get_config())
    assert clone.plans == stacked.plans
    # one remap for all features once any feature is remapped
    identity_remaps = sum(l.input_dim for l in layers
                          if not getattr(getattr(l, "plan", None), "remapped", False))
    assert stacked.bytes == sum(
        (l.bytes if hasattr(l, "plan") else 4 * l.count_params())
        for l in layers) + 4 * identity_remaps


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel export")
def test_saved_model_export(tmp_path):
    import tensorflow as tf

    stacked = StackedEmbedding([uniform_plan(30, 4).input_dim, BlockPlan(
        60, 4, [Block(0, 10, 4), Block(10, 60, 2)])], 4)
    inputs = keras.Input((2,), dtype="int32")
    model = keras.Model(inputs, stacked(inputs))
    ids = np.array([[1, 59], [29, -1], [30, 10]], dtype="int32")
    model.export(str(tmp_path / "export"), format="tf_saved_model")
    served = tf.saved_model.load(str(tmp_path / "export"))
    np.testing.assert_allclose(served.serve(tf.constant(ids)).numpy(),
                               ops.convert_to_numpy(model(ids)), rtol=1e-6)


@pytest.mark.parametrize("args,error,match", [
    (([], 4), ValueError, "non-empty"),
    (([0], 4), ValueError, "Feature 0"),
    ((["a"], 4), ValueError, "Feature 0"),
    (([5], 0), ValueError, "output_dim"),
    (([BlockPlan(5, 2, [Block(0, 5, 2)])], 4), ValueError, "output_dim=2"),
])
def test_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        StackedEmbedding(*args)


def test_wrong_number_of_features():
    with pytest.raises(ValueError, match="2 features"):
        StackedEmbedding([5, 6], 2)(np.zeros((4, 3), "int32"))


def test_from_layers_rejects_mismatched_layers():
    with pytest.raises(ValueError, match="output dims differ"):
        StackedEmbedding.from_layers([keras.layers.Embedding(5, 2),
                                      keras.layers.Embedding(5, 3)])
    stacked = StackedEmbedding([5], 2)
    layer = keras.layers.Embedding(6, 2)
    layer.build()
    with pytest.raises(ValueError, match="shape"):
        stacked.set_from_layers([layer])


def test_dlrm_stacked_equals_per_feature():
    from keras_mixed_dim.models.dlrm import dlrm
    from keras_mixed_dim.models.dlrm import embedding_layers

    cards = [40, 3000, 7, 12000]
    rng = np.random.default_rng(4)
    x = {"dense": rng.random((32, 13)).astype("float32"),
         "categorical": rng.integers(0, cards, size=(32, 4)).astype("int32")}
    for mode in ("uniform", "table_blocks"):
        per_feature = dlrm(embedding_layers(cards, 8, mode, block_min_rows=1000), 8,
                           bottom=(16,), top=(16,), stacked=False)
        expected = ops.convert_to_numpy(per_feature.predict(x, verbose=0))
        embeddings = [per_feature.get_layer(f"embedding_{f}") for f in range(4)]
        stacked = dlrm(embeddings, 8, bottom=(16,), top=(16,), stacked=True)
        assert isinstance(stacked.get_layer("embeddings"), StackedEmbedding)
        for layer in stacked.layers:
            if layer.name.startswith(("bottom", "top", "probability")):
                layer.set_weights(per_feature.get_layer(layer.name).get_weights())
        np.testing.assert_allclose(ops.convert_to_numpy(stacked.predict(x, verbose=0)),
                                   expected, rtol=1e-5, atol=1e-6)
        stacked.compile("adam", "binary_crossentropy")
        stacked.fit(x, np.ones((32, 1), "float32"), verbose=0)


def test_dense_per_feature_ids_equal_the_concatenated_ids():
    layer = StackedEmbedding([30, 20], 4, bag_sizes=[3, 1], combiner="mean")
    tags = np.array([[3, 7, -1], [2**40, 5, -1]])  # 2**40 wraps onto no id
    site = np.array([1, 19])
    weights = np.array([[0.5, 2.0, 0.0], [1.0, 3.0, 0.0]], "float32")
    expected = ops.convert_to_numpy(layer(
        np.array([[3, 7, -1, 1], [-1, 5, -1, 19]]),
        weights=np.concatenate([weights, np.ones((2, 1), "float32")], axis=1)))
    by_name = dict(zip(layer.feature_names, [tags, site[:, None]]))
    for ids in ([tags, site], by_name):
        np.testing.assert_allclose(
            ops.convert_to_numpy(layer(ids, weights=[weights, None])), expected,
            atol=1e-6)
    tensors = [ops.convert_to_tensor(tags[:1].astype("int32")),
               ops.convert_to_tensor(site[:1].astype("int32"))]
    np.testing.assert_allclose(ops.convert_to_numpy(layer(tensors))[0, 1],
                               expected[0, 1], atol=1e-6)


def test_vocabularies_adding_up_past_int32_are_refused_naming_the_total():
    # each fits int32, their int32 offsets would not
    with pytest.raises(ValueError, match="add up to 2147483648 ids"):
        StackedEmbedding([2**30, 2**30], 4)
    StackedEmbedding([2**30, 2**30 - 1], 4)   # the largest total that fits


# --- fused for serving: one gather and one batched matmul -----------------

def _numpy_lookup(stacked, ids):
    """Each feature's vectors from its block tables and projections in numpy
    (`feature_weights`), through the remap, with the id rule."""
    out = np.zeros((*ids.shape, stacked.output_dim), dtype="float32")
    for f, plan in enumerate(stacked.plans):
        tables, projections = stacked.feature_weights(f)
        ranks = stacked.feature_ranks(f)
        for b, i in enumerate(ids[:, f]):
            if not 0 <= i < plan.input_dim:
                continue
            rank = ranks[i]
            for block, table, projection in zip(plan.blocks, tables, projections):
                if block.start <= rank < block.stop:
                    row = table[rank - block.start]
                    out[b, f] = row if projection is None else row @ projection
    return out


def test_fused_lookup_equals_the_grouped_one_and_numpy():
    rng = np.random.default_rng(5)
    layers = _per_feature_layers()
    ids = _ids(rng, layers, batch=16)
    _built(layers, ids)
    layers[-1].remap.assign(rng.permutation(layers[-1].input_dim).astype("int32"))
    stacked = StackedEmbedding.from_layers(layers)
    # per-table MD: one block per feature, widths 8 (no projection), 4 and 2
    per_table = StackedEmbedding([50, BlockPlan(300, DIM, [Block(0, 300, 4)]),
                                  BlockPlan(100, DIM, [Block(0, 100, 2)]),
                                  BlockPlan(70, DIM, [Block(0, 70, 4)])], DIM)
    table_ids = _ids(rng, [keras.layers.Embedding(n, 1) for n in (50, 300, 100, 70)], 16)
    for (layer, x), projection in itertools.product(
            ((stacked, ids), (per_table, table_ids)), ("batched", "block_diagonal")):
        layer.build()
        grouped = ops.convert_to_numpy(layer(x))
        with layer.fused_for_serving(projection) as fused:
            got = ops.convert_to_numpy(layer(x))
        assert fused.single_block == (layer is per_table)
        np.testing.assert_allclose(got, grouped, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got, _numpy_lookup(layer, x), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[:2], 0.0)  # invalid ids: exact zeros
        with layer.fused_for_serving(projection):  # ids with two leading axes
            got = ops.convert_to_numpy(layer(x[:8].reshape(2, 4, -1)))
        np.testing.assert_allclose(got, grouped[:8].reshape(2, 4, *grouped.shape[1:]),
                                   rtol=1e-5, atol=1e-6)
        assert layer._fused is None  # the context restores the layer's lookup
    # bytes: the tables, a zero row per block, a (slots, d) projection per feature
    with per_table.fused_for_serving("batched") as fused:
        assert fused.slots == DIM
        assert fused.bytes == 4 * ((51 * 8 + 301 * 4 + 101 * 2 + 71 * 4) + 4 * 8 * DIM)
        assert fused.added_bytes == fused.bytes - 4 * (
            50 * 8 + 300 * 4 + 100 * 2 + 70 * 4 + (4 + 2 + 4) * DIM)
    # block-diagonal: the features' widths end to end, times F * d columns
    with per_table.fused_for_serving("block_diagonal") as fused:
        assert tuple(fused.projections.shape) == (8 + 4 + 2 + 4, 4 * DIM)
        assert fused.bytes == 4 * ((51 * 8 + 301 * 4 + 101 * 2 + 71 * 4) + 18 * 4 * DIM)


def test_fused_lookup_weights_scale_each_feature():
    layer = StackedEmbedding([30, BlockPlan(60, 4, [Block(0, 10, 4), Block(10, 60, 2)])],
                             4, combiner="mean")
    ids = np.array([[1, 59], [29, -1], [30, 10]], dtype="int32")
    weights = np.array([[2.0, 0.5], [1.0, 3.0], [4.0, -1.0]], dtype="float32")
    expected = ops.convert_to_numpy(layer(ids, weights=weights))
    with layer.fused_for_serving():
        got = ops.convert_to_numpy(layer(ids, weights=weights))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_fused_for_serving_refuses_training_and_unfusable_layers():
    layer = StackedEmbedding([30, BlockPlan(60, 4, [Block(0, 60, 2)])], 4)
    with pytest.raises(ValueError, match="built"):
        with layer.fused_for_serving():
            pass
    layer.build()
    with layer.fused_for_serving():
        with pytest.raises(ValueError, match="not trained"):
            layer(np.array([[1, 2]]), training=True)
        with pytest.raises(ValueError, match="already fused"):
            with layer.fused_for_serving():
                pass
    with pytest.raises(ValueError, match="'batched' or 'block_diagonal'.*'dense'"):
        with layer.fused_for_serving("dense"):
            pass
    # a block-diagonal projection above an eighth of the tables and 1 MiB
    # (128 x 4096 floats, 2 MiB, on 64 tables of 3 rows): refused
    tiny = StackedEmbedding([BlockPlan(3, 64, [Block(0, 3, 2)])] * 64, 64)
    tiny.build()
    with pytest.raises(ValueError, match="block-diagonal projection.*bytes"):
        with tiny.fused_for_serving("block_diagonal"):
            pass
    # "auto": block-diagonal within the cap, batched above it
    with tiny.fused_for_serving() as fused:
        assert fused.projection == "batched"
    with layer.fused_for_serving() as fused:
        assert fused.projection == "block_diagonal"
    for unfusable in (StackedEmbedding([30, 60], 4),  # one uniform stack: one gather
                      StackedEmbedding([30, BlockPlan(60, 4, [Block(0, 60, 2)])], 4,
                                       bag_sizes=[2, 1])):
        unfusable.build()
        assert not unfusable.fusable
        with pytest.raises(ValueError, match="cannot be fused"):
            with unfusable.fused_for_serving():
                pass

def _whole_table_layers():
    """Per-table MD features whose width groups take every branch of a
    training lookup: small tables projected whole (a group of two, and one
    without projection), a width group mixing small and large tables, a
    width-1 group of two large tables and a lone large one."""
    specs = [(30, DIM), (9000, 2), (25, 4), (17000, 1), (40, 2), (3000, 6),
             (60, 4), (20000, 1), (9500, 2)]
    return [MixedDimEmbedding(rows, DIM, plan=BlockPlan(rows, DIM, [Block(0, rows, w)]),
                              name=f"f{f}") for f, (rows, w) in enumerate(specs)]


def test_training_lookup_of_whole_tables_equals_the_per_feature_layers(monkeypatch):
    layers = _whole_table_layers()
    ids = _ids(np.random.default_rng(5), layers, batch=32)
    _built(layers, ids)
    stacked = StackedEmbedding.from_layers(layers)
    # the training path, with head and gathered groups both present
    assert stacked._trains_by_groups()
    assert [g.name for g in stacked.groups] == [
        "stacked_w8", "stacked_w6p", "stacked_w4p", "stacked_w2p", "stacked_w1p"]
    expected = np.stack([_reference(layer, ids[:, f])
                         for f, layer in enumerate(layers)], axis=1)
    got = ops.convert_to_numpy(stacked(ids, training=True))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[:2], 0.0)
    # groups too wide for a block-diagonal projection: one matmul per member
    monkeypatch.setattr(stacked_embedding, "_BLOCK_DIAGONAL_MAX_ENTRIES", 0)
    np.testing.assert_allclose(ops.convert_to_numpy(stacked(ids, training=True)),
                               expected, rtol=1e-5, atol=1e-6)
    monkeypatch.undo()

    # one SGD step on the same loss moves every table and projection as it
    # moves the per-feature layers' (the gradients go through the head
    # table, the zero row, the member projections and the reordering)
    target = np.random.default_rng(6).normal(size=(32, len(layers) * DIM))

    def trained(outputs_of, weights_of):
        inputs = keras.Input((len(layers),), dtype="int32")
        model = keras.Model(inputs, keras.layers.Flatten()(outputs_of(inputs)))
        model.compile(keras.optimizers.SGD(0.5), loss="mse")
        model.train_on_batch(ids, target.astype("float32"))
        return weights_of()

    after_stacked = trained(stacked, lambda: [stacked.feature_weights(f)
                                              for f in range(len(layers))])

    def per_feature(inputs):
        return ops.stack([layer(inputs[:, f]) for f, layer in enumerate(layers)], axis=1)

    after_layers = trained(per_feature, lambda: [
        ([ops.convert_to_numpy(t) for t in layer.block_embeddings],
         [None if p is None else ops.convert_to_numpy(p) for p in layer.block_projections])
        for layer in layers])
    for f, ((tables, projections), (want_tables, want_projections)) in enumerate(
            zip(after_stacked, after_layers)):
        np.testing.assert_allclose(tables[0], want_tables[0], rtol=1e-5, atol=1e-6,
                                   err_msg=f"feature {f} table")
        if want_projections[0] is None:
            assert projections[0] is None
        else:
            np.testing.assert_allclose(projections[0], want_projections[0], rtol=1e-5,
                                       atol=1e-6, err_msg=f"feature {f} projection")
