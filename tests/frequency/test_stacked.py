"""Counting, re-ranking and re-planning on a StackedEmbedding give what they
give on the per-feature MixedDimEmbedding layers it replaces (same weights,
same data), on the current backend (test_backends.py-style runs under JAX
work too)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim import FrequencyRecount
from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.frequency import replan_stacked
from keras_mixed_dim.frequency import rerank_stacked
from keras_mixed_dim.frequency.rerank import slot_variables
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan

DIM = 8
CARDS = (300, 40, 120, 200)


def per_feature_layers(half_life=None):
    rng = np.random.default_rng(0)
    return [
        MixedDimEmbedding(300, DIM, count_frequencies=True, num_blocks=3, alpha=0.5,
                          frequency_half_life=half_life, name="items"),
        # not counting: untouched by the callback
        keras.layers.Embedding(40, DIM, name="plain"),
        MixedDimEmbedding(120, DIM, counts=rng.integers(1, 50, 120),
                          count_frequencies=True, num_blocks=2, alpha=0.6,
                          frequency_half_life=half_life, name="users"),
        MixedDimEmbedding(200, DIM, plan=BlockPlan(
            200, DIM, [Block(0, 30, 8), Block(30, 200, 4)], remapped=True),
            count_frequencies=True, frequency_half_life=half_life, name="pinned"),
    ]


def zipf_ids(rows, seed=0):
    """`(rows, F)` ids, Zipf popularity over a random permutation per feature."""
    rng = np.random.default_rng(seed)
    columns = []
    for n in CARDS:
        p = 1.0 / np.arange(1, n + 1) ** 1.2
        columns.append(rng.permutation(n)[rng.choice(n, size=rows, p=p / p.sum())])
    return np.stack(columns, axis=1).astype("int32")


def twin_models(half_life=None):
    """A per-feature model and a stacked one with the same weights, each with
    SGD + momentum (one slot per table; linear in the gradient, so a
    `keras.layers.Embedding`'s update equals a stacked table's, which Keras's
    Adam on TensorFlow's sparse gradients does not guarantee)."""
    keras.utils.set_random_seed(0)
    layers = per_feature_layers(half_life)
    inputs = keras.Input((len(CARDS),), dtype="int32")
    vectors = [layer(inputs[:, f]) for f, layer in enumerate(layers)]
    head = keras.layers.Dense(1, name="head")
    per_feature = keras.Model(
        inputs, head(keras.layers.Concatenate()(vectors)))
    stacked_layer = StackedEmbedding.from_layers(layers, name="stacked")
    stacked_inputs = keras.Input((len(CARDS),), dtype="int32")
    stacked_head = keras.layers.Dense(1, name="head")
    stacked = keras.Model(stacked_inputs, stacked_head(
        keras.layers.Flatten()(stacked_layer(stacked_inputs))))
    stacked_head.set_weights(head.get_weights())
    for model in (per_feature, stacked):
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    return per_feature, layers, stacked, stacked_layer


def assert_same_features(layers, stacked_layer, atol=1e-5, weights=True):
    everything = [np.arange(n) for n in CARDS]
    for f, layer in enumerate(layers):
        if isinstance(layer, MixedDimEmbedding):
            assert stacked_layer.plans[f] == layer.plan
            np.testing.assert_array_equal(stacked_layer.feature_ranks(f),
                                          ops.convert_to_numpy(layer.remap))
            np.testing.assert_array_equal(stacked_layer.feature_counts(f),
                                          ops.convert_to_numpy(layer.frequency_counts))
            expected_tables = layer.block_embeddings
            expected_projections = layer.block_projections
        else:
            expected_tables, expected_projections = [layer.embeddings], [None]
        tables, projections = stacked_layer.feature_weights(f)
        if weights:
            for got, want in zip(tables, expected_tables):
                np.testing.assert_allclose(got, ops.convert_to_numpy(want), atol=atol)
            for got, want in zip(projections, expected_projections):
                assert (got is None) == (want is None)
                if got is not None:
                    np.testing.assert_allclose(got, ops.convert_to_numpy(want), atol=atol)
        # each feature's output for every id
        ids = np.full((CARDS[f], len(CARDS)), -1, dtype="int32")
        ids[:, f] = everything[f]
        got = ops.convert_to_numpy(stacked_layer(ids))[:, f]
        want = ops.convert_to_numpy(layer(everything[f]))
        np.testing.assert_allclose(got, want, atol=atol)


def test_counts_equal_the_per_feature_counts_and_only_in_training():
    per_feature, layers, stacked, stacked_layer = twin_models()
    ids = zipf_ids(256)
    ids[0] = [-1, 39, 10**6, 200]  # out of range for the MD features
    ids[1] = [299, 0, 119, 0]
    y = np.zeros((256, 1), "float32")
    for model in (per_feature, stacked):
        model.fit(ids, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    assert stacked_layer.counting_features == (0, 2, 3)
    for f in (0, 2, 3):
        expected = np.zeros(CARDS[f])
        valid = ids[:, f][(ids[:, f] >= 0) & (ids[:, f] < CARDS[f])]
        np.add.at(expected, valid, 2)
        np.testing.assert_array_equal(stacked_layer.feature_counts(f), expected)
    assert_same_features(layers, stacked_layer, atol=1e-5)
    before = ops.convert_to_numpy(stacked_layer.frequency_counts).copy()
    stacked.predict(ids, verbose=0)
    stacked.evaluate(ids, y, verbose=0)
    np.testing.assert_array_equal(ops.convert_to_numpy(stacked_layer.frequency_counts),
                                  before)
    with pytest.raises(ValueError, match="does not count"):
        stacked_layer.feature_counts(1)


def test_decayed_counts_equal_the_per_feature_ones():
    per_feature, layers, stacked, stacked_layer = twin_models(half_life=3.0)
    ids = zipf_ids(128, seed=1)
    for model in (per_feature, stacked):
        model.fit(ids, np.zeros((128, 1)), epochs=1, batch_size=16, shuffle=False,
                  verbose=0)
    for f in (0, 2, 3):
        np.testing.assert_allclose(stacked_layer.feature_counts(f),
                                   ops.convert_to_numpy(layers[f].frequency_counts),
                                   rtol=1e-6)


@pytest.mark.parametrize("every_n_steps", [None, 3])
def test_recount_equals_per_feature_recount(every_n_steps):
    per_feature, layers, stacked, stacked_layer = twin_models()
    ids = zipf_ids(480, seed=2)
    y = np.sin(ids.sum(axis=1, keepdims=True)).astype("float32")
    histories, callbacks = [], []
    for model in (per_feature, stacked):
        callback = FrequencyRecount(every_n_steps=every_n_steps)
        callbacks.append(callback)
        histories.append(model.fit(ids, y, epochs=2, batch_size=40, shuffle=False,
                                   callbacks=[callback], verbose=0).history)
    assert_same_features(layers, stacked_layer, atol=2e-4)
    np.testing.assert_allclose(stacked.predict(ids, verbose=0),
                               per_feature.predict(ids, verbose=0), atol=2e-4)
    # ids really moved, and the reports and logs carry the per-feature names
    moved = [r["items"].ids_moved for r in callbacks[0].reports]
    assert sum(moved) > 0
    assert len(callbacks[1].reports) == len(callbacks[0].reports)
    for theirs, ours in zip(callbacks[0].reports, callbacks[1].reports):
        assert sorted(ours) == sorted(theirs) == ["items", "pinned", "users"]
        for name in theirs:
            assert ours[name].ids_moved == theirs[name].ids_moved
            assert ours[name].mass_after == pytest.approx(theirs[name].mass_after)
    if every_n_steps is None:
        assert set(histories[0]) == set(histories[1])
        assert "items_ids_moved" in histories[1]


@pytest.mark.parametrize("optimizer", ["momentum", "row_adagrad"])
def test_rerank_moves_the_optimizer_slots_within_each_feature(optimizer):
    per_feature, layers, stacked, stacked_layer = twin_models()
    if optimizer == "row_adagrad":
        # one `(rows,)` accumulator per table (issue 21: it did not move)
        from keras_mixed_dim.optimizers import SparseRowOptimizer

        for model in (per_feature, stacked):
            model.compile(SparseRowOptimizer("sgd", "adagrad", table_learning_rate=0.1), "mse")
    ids = zipf_ids(160, seed=3)
    y = np.cos(ids.sum(axis=1, keepdims=True)).astype("float32")
    for model in (per_feature, stacked):
        model.fit(ids, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    rng = np.random.default_rng(4)
    counts = {f: rng.integers(0, 100, CARDS[f]).astype(float) for f in (0, 2, 3)}
    from keras_mixed_dim.frequency import rerank_layer

    for f in (0, 2, 3):
        rerank_layer(layers[f], counts[f], optimizer=per_feature.optimizer)
    reports = rerank_stacked(stacked_layer, counts=counts, optimizer=stacked.optimizer)
    assert sorted(reports) == [0, 2, 3] and reports[0].ids_moved > 0
    assert_same_features(layers, stacked_layer, atol=1e-5)
    # the slots: each feature's rows of the stacked slots equal its layer's
    # (moved with the rows, reset for moved ids)
    slots = [slot_variables(stacked.optimizer, t) for t in stacked_layer.tables]
    assert all(len(group) == 1 for group in slots)
    for f in (0, 2, 3):
        for i, (g, _, offset) in enumerate(stacked_layer.feature_members(f)):
            rows = stacked_layer.plans[f].blocks[i].rows
            theirs = slot_variables(per_feature.optimizer, layers[f].block_embeddings[i])
            for ours, want in zip(slots[g], theirs):
                np.testing.assert_allclose(
                    ops.convert_to_numpy(ours)[offset:offset + rows],
                    ops.convert_to_numpy(want), atol=1e-5)


def test_replan_equals_per_feature_replan_and_training_goes_on(tmp_path):
    per_feature, layers, stacked, stacked_layer = twin_models()
    old_plans = stacked_layer.plans
    ids = zipf_ids(600, seed=5)
    y = np.sin(ids[:, :1]).astype("float32")
    callbacks = [FrequencyRecount(replan=True), FrequencyRecount(replan=True)]
    for model, callback in zip((per_feature, stacked), callbacks):
        model.fit(ids, y, epochs=1, batch_size=60, shuffle=False, callbacks=[callback],
                  verbose=0)
    assert stacked_layer.plans != old_plans
    assert stacked_layer.plans[1] == old_plans[1]  # the uniform feature is kept
    # A warm start's directions are unique only up to a rotation (and, where
    # a block's old outputs have lower rank than its dim, up to the spare
    # directions), so compare what the features compute.
    assert_same_features(layers, stacked_layer, atol=1e-5, weights=False)
    np.testing.assert_allclose(stacked.predict(ids, verbose=0),
                               per_feature.predict(ids, verbose=0), atol=1e-5)
    (theirs,), (ours,) = callbacks[0].reports, callbacks[1].reports
    assert sorted(ours) == sorted(theirs) == ["items", "pinned", "users"]
    for name in theirs:
        assert ours[name].rebuilt == theirs[name].rebuilt
        assert ours[name].warm_start_error == pytest.approx(
            theirs[name].warm_start_error, rel=1e-4, abs=1e-6)
    # the stacked variables were rebuilt for the new shapes; training goes
    # on (with further re-plans) and the model saves and loads
    # every array counted: tables, projections, the remap and the counts
    assert stacked_layer.bytes == 4 * sum(int(np.prod(w.shape))
                                          for w in stacked_layer.weights)
    history = stacked.fit(ids, y, epochs=3, batch_size=60, shuffle=False,
                          callbacks=[callbacks[1]], verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert "items_params" in history and "pinned_warm_start_error" in history
    path = tmp_path / "replanned.keras"
    stacked.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(ids[:20], verbose=0),
                               stacked.predict(ids[:20], verbose=0), atol=1e-6)
    assert loaded.get_layer("stacked").plans == stacked_layer.plans
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded.get_layer("stacked").frequency_counts),
        ops.convert_to_numpy(stacked_layer.frequency_counts))


def test_replan_stacked_of_one_feature_keeps_the_others():
    _, layers, _, stacked_layer = twin_models()
    rng = np.random.default_rng(6)
    counts = rng.integers(0, 1000, CARDS[0]).astype(float)
    before = {f: stacked_layer.feature_weights(f) for f in (1, 2, 3)}
    reports = replan_stacked(stacked_layer, [0], counts={0: counts})
    assert list(reports) == [0] and reports[0].rebuilt
    from keras_mixed_dim.frequency.replan import replan_layer

    replan_layer(layers[0], counts=counts)
    assert stacked_layer.plans[0] == layers[0].plan
    for f, (tables, projections) in before.items():
        now_tables, now_projections = stacked_layer.feature_weights(f)
        for a, b in zip(tables + projections, now_tables + now_projections):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
    assert_same_features(layers, stacked_layer, atol=1e-5, weights=False)


def test_callback_layer_names_select_a_stack_or_its_features():
    _, _, stacked, stacked_layer = twin_models()
    ids = zipf_ids(64, seed=7)
    for names, expected in ((["stacked"], ["items", "pinned", "users"]),
                            (["users"], ["users"])):
        callback = FrequencyRecount(layer_names=names)
        stacked.fit(ids, np.zeros((64, 1)), epochs=1, batch_size=32, verbose=0,
                    callbacks=[callback])
        assert sorted(callback.reports[-1]) == expected
    with pytest.raises(ValueError, match="plain"):
        stacked.fit(ids, np.zeros((64, 1)), epochs=1, verbose=0,
                    callbacks=[FrequencyRecount(layer_names=["plain"])])


def test_counting_argument_errors_name_the_value():
    plan = BlockPlan(10, 4, [Block(0, 10, 4)])
    with pytest.raises(ValueError, match="Feature 0 has count_frequencies"):
        StackedEmbedding([plan], 4, count_frequencies=True)
    with pytest.raises(ValueError, match="2 bools"):
        StackedEmbedding([5, 6], 4, count_frequencies=[True])
    with pytest.raises(ValueError, match="frequency_half_life"):
        StackedEmbedding([5, 6], 4, frequency_half_life=3.0)
    with pytest.raises(ValueError, match="planning_args"):
        StackedEmbedding([5], 4, planning_args=[{"alfa": 1}])
    with pytest.raises(ValueError, match="no feature that counts"):
        layer = StackedEmbedding([5], 4)
        layer.build()
        rerank_stacked(layer)


@pytest.mark.parametrize("replan", [False, True], ids=["rerank", "replan"])
def test_bags_count_each_id_once_and_recount_as_per_feature_layers(replan):
    """Bags of ids with weights: every valid occurrence counts once (whatever
    its weight), and counting plus re-ranking (or re-planning) on a stacked
    layer of bags gives what the per-feature bag layers give."""
    if replan and keras.backend.backend() != "tensorflow":
        pytest.skip("re-planning recompiles: once, on TensorFlow, is enough here")
    keras.utils.set_random_seed(0)
    sizes, cards = (3, 1), (60, 25)
    layers = [MixedDimEmbedding(n, DIM, count_frequencies=True, num_blocks=2,
                                alpha=0.5, combiner="mean", name=name)
              for n, name in zip(cards, ("tags", "user"))]
    ids_in = keras.Input((4,), dtype="int32")
    weights_in = keras.Input((4,), dtype="float32")
    vectors = [layers[0](ids_in[:, :3], weights=weights_in[:, :3]),
               layers[1](ids_in[:, 3:], weights=weights_in[:, 3:])]
    head = keras.layers.Dense(1, name="head")
    per_feature = keras.Model([ids_in, weights_in],
                              head(keras.layers.Concatenate()(vectors)))
    stacked_layer = StackedEmbedding.from_layers(layers, bag_sizes=list(sizes),
                                                 combiner="mean", name="stacked")
    ids_in2 = keras.Input((4,), dtype="int32")
    weights_in2 = keras.Input((4,), dtype="float32")
    stacked_head = keras.layers.Dense(1, name="head")
    stacked = keras.Model([ids_in2, weights_in2], stacked_head(keras.layers.Flatten()(
        stacked_layer(ids_in2, weights=weights_in2))))
    stacked_head.set_weights(head.get_weights())
    rng = np.random.default_rng(4)
    p = 1.0 / np.arange(1, 61) ** 1.2
    tags = rng.permutation(60)[rng.choice(60, size=(120, 3), p=p / p.sum())]
    tags[::4, 2] = -1  # padding
    ids = np.concatenate([tags, rng.integers(-1, 25, (120, 1))], axis=1).astype("int32")
    weights = rng.uniform(-0.5, 2.0, ids.shape).astype("float32")
    y = np.sin(ids.sum(axis=1, keepdims=True)).astype("float32")
    callbacks = []
    for model in (per_feature, stacked):
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
        callbacks.append(FrequencyRecount(replan=True) if replan
                         else FrequencyRecount(every_n_steps=2))
        model.fit([ids, weights], y, epochs=1, batch_size=40, shuffle=False,
                  callbacks=[callbacks[-1]], verbose=0)
    for f, columns in enumerate((slice(0, 3), slice(3, 4))):
        expected = np.zeros(cards[f])
        column_ids = ids[:, columns].ravel()
        np.add.at(expected, column_ids[column_ids >= 0], 1)
        np.testing.assert_array_equal(stacked_layer.feature_counts(f), expected)
        np.testing.assert_array_equal(stacked_layer.feature_ranks(f),
                                      ops.convert_to_numpy(layers[f].remap))
    if replan:
        assert callbacks[1].reports[-1]["tags"].rebuilt
        assert stacked_layer.plans[0] == layers[0].plan
    else:
        assert sum(r["tags"].ids_moved for r in callbacks[1].reports) > 0
    np.testing.assert_allclose(stacked.predict([ids, weights], verbose=0),
                               per_feature.predict([ids, weights], verbose=0), atol=2e-4)
