"""Frequency counting and FrequencyRecount, on the current backend
(test_backends.py runs this file again under JAX)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim import FrequencyRecount
from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.frequency import rerank_layer

BACKEND = keras.backend.backend()


def counting_model(input_dim=40, dim=8, half_life=None, bag=2):
    layer = MixedDimEmbedding(input_dim, dim, count_frequencies=True,
                              frequency_half_life=half_life, num_blocks=3, alpha=0.5,
                              name="items")
    inputs = keras.Input((bag,), dtype="int32")
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(layer(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model, layer


def shuffled_zipf_ids(num_ids, rows, exponent=1.3):
    """`(rows, 1)` ids with Zipf popularity over a random permutation."""
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, num_ids + 1) ** exponent
    return rng.permutation(num_ids)[rng.choice(num_ids, size=(rows, 1), p=p / p.sum())]


def counts_of(layer):
    return ops.convert_to_numpy(layer.frequency_counts)


def test_counts_are_exact_and_only_in_training():
    model, layer = counting_model()
    ids = np.array([[1, 2], [1, 1], [39, -1], [3, 100]] * 8)
    model.fit(ids, np.zeros((32, 1)), epochs=2, batch_size=4, verbose=0)
    expected = np.zeros(40, dtype=np.int64)
    for i in ids.ravel():
        if 0 <= i < 40:
            expected[i] += 2  # two epochs
    np.testing.assert_array_equal(counts_of(layer), expected)
    model.predict(ids, verbose=0)
    model.evaluate(ids, np.zeros((32, 1)), verbose=0)
    layer(ids)
    np.testing.assert_array_equal(counts_of(layer), expected)


def test_counts_decay_with_a_half_life():
    model, layer = counting_model(half_life=1.0)
    ids = np.array([[5, 5]] * 4 + [[6, 6]] * 4)
    model.fit(ids, np.zeros((8, 1)), epochs=1, batch_size=4, shuffle=False, verbose=0)
    counts = counts_of(layer)
    # step 1: id 5 gets 8; step 2: halved to 4, id 6 gets 8
    np.testing.assert_allclose(counts[[5, 6]], [4.0, 8.0])


def test_rerank_moves_ids_to_the_top_k_and_warm_starts_them():
    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=30, dim=6)
    model.predict(np.zeros((1, 2), dtype="int32"), verbose=0)  # build
    ids = np.arange(30)
    before = ops.convert_to_numpy(layer(ids))
    old_ranks = ops.convert_to_numpy(layer.remap)
    counts = np.zeros(30)
    counts[[29, 17, 5]] = [100, 50, 20]
    report = rerank_layer(layer, counts)
    ranks = ops.convert_to_numpy(layer.remap)
    np.testing.assert_array_equal(ranks[[29, 17, 5]], [0, 1, 2])
    plan = layer.plan
    # membership equals the top-k ranking by count, ties by old rank
    expected_order = np.lexsort((old_ranks, -counts))
    np.testing.assert_array_equal(np.argsort(ranks), expected_order)
    after = ops.convert_to_numpy(layer(ids))
    old_blocks = plan.block_of_rank(old_ranks)
    new_blocks = plan.block_of_rank(ranks)
    stayed = old_blocks == new_blocks
    assert report.ids_moved == int((~stayed).sum()) > 0
    np.testing.assert_array_equal(after[stayed], before[stayed])  # bit-identical
    for i in np.flatnonzero(~stayed):
        b = new_blocks[i]
        projection = layer.block_projections[b]
        if projection is None:
            np.testing.assert_allclose(after[i], before[i], atol=1e-6)
        else:
            p = ops.convert_to_numpy(projection).astype(np.float64)
            # least squares: the residual is orthogonal to the row space of P
            residual = before[i] - after[i]
            np.testing.assert_allclose(p @ residual, 0, atol=1e-4)
            best = before[i] @ np.linalg.pinv(p) @ p
            np.testing.assert_allclose(after[i], best, atol=1e-5)
    top = np.sort(counts)[::-1][: plan.rows[0]]
    assert report.mass_after[0] == pytest.approx(top.sum() / 170)


def test_rerank_resets_optimizer_slots_of_moved_rows():
    model, layer = counting_model(input_dim=30, dim=6)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30, size=(64, 2))
    model.fit(ids, rng.normal(size=(64, 1)), epochs=1, batch_size=16, verbose=0)
    table = layer.block_embeddings[-1]
    prefix = table.path.replace("/", "_") + "_"
    slots = [v for v in model.optimizer.variables if v.name.startswith(prefix)]
    assert len(slots) == 2  # Adam's momentum and velocity
    counts = np.zeros(30)
    counts[np.argsort(ops.convert_to_numpy(layer.remap))[-1]] = 1000  # last rank -> top
    old_ranks = ops.convert_to_numpy(layer.remap)
    momentum_before = ops.convert_to_numpy(slots[0]).copy()
    rerank_layer(layer, counts, optimizer=model.optimizer)
    ranks = ops.convert_to_numpy(layer.remap)
    plan = layer.plan
    last = plan.num_blocks - 1
    momentum = ops.convert_to_numpy(slots[0])
    for i in range(30):
        if plan.block_of_rank(ranks[i]) != last:
            continue
        row = ranks[i] - plan.offsets[last]
        if plan.block_of_rank(old_ranks[i]) == last:
            old_row = old_ranks[i] - plan.offsets[last]
            np.testing.assert_array_equal(momentum[row], momentum_before[old_row])
        else:
            np.testing.assert_array_equal(momentum[row], 0)


def test_callback_follows_a_drift_and_logs_what_it_did():
    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=60, dim=8, half_life=20.0, bag=1)
    rng = np.random.default_rng(1)
    popularity = 1.0 / np.arange(1, 61) ** 1.2
    first = rng.choice(60, size=(2000, 1), p=popularity / popularity.sum())
    shifted = 59 - first  # the most popular ids change halfway
    ids = np.concatenate([first, shifted])
    targets = np.sin(ids).astype("float32")
    callback = FrequencyRecount()
    history = model.fit(ids, targets, epochs=2, batch_size=200, shuffle=False,
                        callbacks=[callback], verbose=0)
    counts = counts_of(layer)
    ranks = ops.convert_to_numpy(layer.remap)
    plan = layer.plan
    # every block holds ids counted at least as often as any later block's:
    # membership is the top-k ranking by decayed count
    blocks = plan.block_of_rank(ranks)
    for b in range(plan.num_blocks - 1):
        assert counts[blocks == b].min() >= counts[blocks > b].max()
    assert ranks[59] < plan.rows[0]  # the new most popular id is in block 0
    logs = history.history
    assert "items_ids_moved" in logs and len(logs["items_ids_moved"]) == 2
    assert logs["items_block0_mass_after"][-1] >= logs["items_block0_mass_before"][-1]
    assert len(callback.reports) == 2


def test_callback_every_n_steps_runs_mid_epoch():
    model, layer = counting_model()
    callback = FrequencyRecount(every_n_steps=3)
    ids = np.random.default_rng(0).integers(0, 40, size=(64, 2))
    model.fit(ids, np.zeros((64, 1)), epochs=1, batch_size=8, callbacks=[callback],
              verbose=0)
    assert len(callback.reports) == 8 // 3


def test_callback_errors_are_clear():
    with pytest.raises(ValueError, match="every_n_steps"):
        FrequencyRecount(every_n_steps=0)
    inputs = keras.Input((1,), dtype="int32")
    model = keras.Model(inputs, MixedDimEmbedding(10, 4)(inputs))
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="count_frequencies=True"):
        model.fit(np.zeros((4, 1), "int32"), np.zeros((4, 1, 4)), verbose=0,
                  callbacks=[FrequencyRecount()])
    with pytest.raises(ValueError, match="frequency_half_life"):
        MixedDimEmbedding(10, 4, frequency_half_life=10)


def test_counting_adds_no_op_to_inference_graphs():
    _, layer = counting_model()
    ids = np.array([[1, 2], [3, 4]], dtype="int32")
    layer(ids)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def op_types(training):
            fn = tf.function(lambda x: layer(x, training=training))
            graph = fn.get_concrete_function(
                tf.TensorSpec((None, 2), tf.int32)).graph
            return {op.type for op in graph.get_operations()}

        # exact counts update in place: only the batch's rows, O(batch)
        training_ops = op_types(True)
        assert "ResourceScatterUpdate" in training_ops  # the check can see counting...
        assert "ScatterNd" not in training_ops  # (no dense O(vocabulary) delta)
        inference = op_types(False)
        assert not inference & {"ResourceScatterUpdate", "ResourceScatterAdd",
                                "ScatterNd", "AssignVariableOp"}
    elif BACKEND == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        others = [v.value for v in layer.non_trainable_variables]

        def jaxpr(training):
            return str(jax.make_jaxpr(
                lambda x: layer.stateless_call(trainable, others, x, training=training)
            )(ids))

        assert "scatter" in jaxpr(True)
        assert "scatter" not in jaxpr(False)
    else:
        # PyTorch runs eagerly, with no graph to inspect: check the effect
        before = counts_of(layer).copy()
        layer(ids, training=False)
        np.testing.assert_array_equal(counts_of(layer), before)
        layer(ids, training=True)
        assert counts_of(layer).sum() == before.sum() + ids.size


def test_sketched_directions_match_exact_ones():
    from keras_mixed_dim.frequency.replan import principal_directions

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    scales = np.array([10, 8, 6, 4] + [0.05] * 12)
    y = (rng.normal(size=(50_000, 16)) * scales) @ basis.T

    def rows(start, stop):
        return y[start:stop]

    exact = principal_directions(rows, len(y), 16, 4)
    sketched = principal_directions(rows, len(y), 16, 4, sketch_rows=128)
    # the same 4-dimensional subspace: singular values of V_e^T V_s near 1
    cosines = np.linalg.svd(exact.T @ sketched, compute_uv=False)
    assert cosines.min() > 0.99
    np.testing.assert_allclose(np.abs(exact.T @ basis[:, :4]).max(axis=0), 1, atol=1e-3)


@pytest.mark.parametrize("sketch_threshold", [10**9, 50])
def test_replan_rebuilds_blocks_and_reports_the_true_error(sketch_threshold):
    from keras_mixed_dim.frequency.replan import replan_layer
    from keras_mixed_dim.planning import plan_blocks

    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=500, dim=8, bag=1)
    ids = shuffled_zipf_ids(500, 3000)
    model.fit(ids, np.sin(ids), epochs=1, batch_size=100, verbose=0)
    counts = counts_of(layer).astype(np.float64)
    everything = np.arange(500)
    before = ops.convert_to_numpy(layer(everything))
    report = replan_layer(layer, sketch_threshold=sketch_threshold)
    after = ops.convert_to_numpy(layer(everything))
    expected_plan = plan_blocks(500, 8, counts=counts, num_blocks=3, alpha=0.5,
                                remap=True)
    assert (layer.plan.rows, layer.plan.dims) == (expected_plan.rows, expected_plan.dims)
    measured = np.linalg.norm(after - before) / np.linalg.norm(before)
    assert report.warm_start_error == pytest.approx(measured, rel=1e-3, abs=1e-6)
    np.testing.assert_array_equal(counts_of(layer), counts)  # counts survive
    if sketch_threshold == 50:
        assert report.sketched_blocks
    # the most counted ids keep their outputs (their block is full width)
    top = np.argsort(-counts, kind="stable")[: layer.plan.rows[0]]
    np.testing.assert_allclose(after[top], before[top], atol=1e-5)


def test_callback_replans_and_training_goes_on(tmp_path):
    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=300, dim=8, bag=1)
    ids = shuffled_zipf_ids(300, 4000)
    callback = FrequencyRecount(replan=True)
    old_plan = layer.plan
    history = model.fit(ids, np.sin(ids), epochs=3, batch_size=200, verbose=0,
                        callbacks=[callback])
    assert layer.plan != old_plan
    assert "items_warm_start_error" in history.history
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    path = tmp_path / "replanned.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(ids[:20], verbose=0),
                               model.predict(ids[:20], verbose=0), atol=1e-6)


def test_after_a_replan_every_compiled_function_sees_the_new_weights():
    # predict, evaluate and fit's validation used to keep the old variables
    # on TensorFlow (only the train step was rebuilt)
    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=300, dim=8, bag=1)
    ids = shuffled_zipf_ids(300, 2000)
    target = np.sin(ids).astype("float32")
    val_ids, val_target = ids[:400], target[:400]
    model.predict(val_ids, verbose=0)  # compile predict before the re-plan
    model.evaluate(val_ids, val_target, verbose=0)
    seen = []

    def check_validation(epoch, logs):
        # runs before FrequencyRecount's epoch end, on the weights that
        # fit's validation just used
        direct = ops.convert_to_numpy(model(val_ids))
        seen.append((logs["val_loss"], float(np.mean((direct - val_target) ** 2))))

    model.fit(ids, target, epochs=3, batch_size=200, verbose=0,
              validation_data=(val_ids, val_target),
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=check_validation),
                         FrequencyRecount(replan=True)])
    assert layer.plan.params > 0 and len(seen) == 3
    for val_loss, true_mse in seen:
        assert val_loss == pytest.approx(true_mse, rel=1e-4)
    direct = ops.convert_to_numpy(model(val_ids))
    np.testing.assert_allclose(model.predict(val_ids, verbose=0), direct, atol=1e-5)
    true_mse = float(np.mean((direct - val_target) ** 2))
    assert model.evaluate(val_ids, val_target, verbose=0) == pytest.approx(true_mse,
                                                                          rel=1e-4)


def test_callback_without_a_counting_layer_fails_before_training():
    inputs = keras.Input((1,), dtype="int32")
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(
        MixedDimEmbedding(20, 4)(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "mse")
    seen = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, l: seen.append(e))
    with pytest.raises(ValueError, match="count_frequencies=True"):
        model.fit(np.zeros((8, 1), "int32"), np.zeros((8, 1)), verbose=0,
                  callbacks=[FrequencyRecount(), probe])
    assert seen == []


def test_replanning_uses_the_saved_planning_settings(tmp_path):
    counts = np.random.default_rng(0).integers(1, 1000, size=200)
    layer = MixedDimEmbedding(200, 16, counts=counts, count_frequencies=True,
                              num_blocks=3, alpha=0.7, budget_bytes=4000,
                              round_dims=True,
                              name="items")
    inputs = keras.Input((1,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path).get_layer("items")
    assert loaded.planning_args == layer.planning_args
    assert loaded.planning_args == {"num_blocks": 3, "alpha": 0.7,
                                    "budget_bytes": 4000.0, "round_dims": True}
    from keras_mixed_dim.frequency.replan import replan_layer

    new_counts = counts[::-1].copy()
    replan_layer(layer, counts=new_counts)
    replan_layer(loaded, counts=new_counts)
    assert loaded.plan == layer.plan
    # tables, projections, the remap and the counts, all within the budget
    assert layer.bytes <= 4000


# -- optimizer state across re-ranking and re-planning (issue 21) ------------

def _sparse_model(num_blocks, optimizer, input_dim=12, dim=4, seed=0, loss_scaled=False):
    keras.utils.set_random_seed(seed)
    from keras_mixed_dim.optimizers import SparseRowOptimizer

    layer = MixedDimEmbedding(input_dim, dim, count_frequencies=True,
                              num_blocks=num_blocks, alpha=0.0 if num_blocks == 1 else 0.5,
                              name="items")
    inputs = keras.Input((2,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(
        layer(inputs))))
    optimizer = SparseRowOptimizer(keras.optimizers.SGD(0.1), **optimizer)
    if loss_scaled:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer, "mse")
    return model, layer


@pytest.mark.parametrize("table_optimizer,loss_scaled", [
    ("adagrad", False), ("ftrl", False), ("ftrl", True)])
def test_rerank_moves_per_row_and_ftrl_slots_with_their_ids(table_optimizer, loss_scaled):
    """Row-wise Adagrad's `(rows,)` accumulator (and FTRL's slots) follow
    each id that stays in its block; moved ids restart from the initial
    accumulator."""
    options = {"table_optimizer": table_optimizer, "learning_rate": 0.1}
    if table_optimizer == "ftrl":
        options.update(l1_regularization_strength=0.001, l2_regularization_strength=0.01,
                       beta=0.1)
    model, layer = _sparse_model(2, options, input_dim=30, loss_scaled=loss_scaled)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30, size=(48, 2)).astype("int32")
    model.fit(ids, rng.normal(size=(48, 1)), batch_size=16, shuffle=False, verbose=0)
    from keras_mixed_dim.frequency.rerank import slot_variables

    plan = layer.plan
    old_ranks = ops.convert_to_numpy(layer.remap)
    groups = [slot_variables(model.optimizer, t) for t in layer.block_embeddings]
    assert [len(g) for g in groups] == [1 if table_optimizer == "adagrad" else 2] * 2
    before = [[ops.convert_to_numpy(s).copy() for s in g] for g in groups]
    counts = old_ranks.astype(float)  # the last ranks come first
    rerank_layer(layer, counts, optimizer=model.optimizer)
    ranks = ops.convert_to_numpy(layer.remap)
    moved = 0
    for i in range(30):
        b, old_b = plan.block_of_rank(ranks[i]), plan.block_of_rank(old_ranks[i])
        row, old_row = ranks[i] - plan.offsets[b], old_ranks[i] - plan.offsets[old_b]
        for k, slot in enumerate(groups[b]):
            value = ops.convert_to_numpy(slot)[row]
            if b == old_b:
                np.testing.assert_array_equal(value, before[b][k][old_row])
            elif slot.name.endswith("accumulator"):
                np.testing.assert_array_equal(value, np.float32(0.1))
            elif table_optimizer != "ftrl":
                np.testing.assert_array_equal(value, 0.0)
        if b != old_b and table_optimizer == "ftrl":
            # FTRL's weights come from its slots: they must give the warm
            # start, so that the id's next step starts from it
            row_value = ops.convert_to_numpy(layer.block_embeddings[b])[row]
            optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
            np.testing.assert_allclose(_ftrl_weights(optimizer, groups[b], row),
                                       row_value, rtol=1e-5, atol=1e-6)
        moved += b != old_b
    assert 0 < moved < 30


def _ftrl_weights(optimizer, slots, row, lr=0.1):
    """The weights FTRL-Proximal derives from its slots (numpy)."""
    accumulator, linear = (ops.convert_to_numpy(s)[row].astype("float64") for s in
                           sorted(slots, key=lambda s: not s.name.endswith("accumulator")))
    l1 = optimizer.l1_regularization_strength
    quadratic = (np.sqrt(accumulator) / lr + 2 * optimizer.l2_regularization_strength
                 + optimizer.beta / lr)
    return (np.clip(linear, -l1, l1) - linear) / quadratic


def test_replan_gives_ftrl_slots_that_keep_the_weights():
    """After a re-plan the fresh FTRL slots reproduce every row's weights,
    so training goes on from the warm start instead of from zero."""
    from keras_mixed_dim.optimizers import SparseRowOptimizer
    from keras_mixed_dim.frequency.rerank import slot_variables

    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=300, dim=8, bag=1)
    model.compile(SparseRowOptimizer(keras.optimizers.Adam(0.01), "ftrl",
                                     learning_rate=0.1, l1_regularization_strength=0.001),
                  "mse")
    ids = shuffled_zipf_ids(300, 400)
    old_plan = layer.plan
    model.fit(ids, np.sin(ids), epochs=1, batch_size=100, verbose=0,
              callbacks=[FrequencyRecount(replan=True)])
    assert layer.plan != old_plan
    for table in layer.block_embeddings:
        slots = slot_variables(model.optimizer, table)
        assert len(slots) == 2
        rows = np.arange(table.shape[0])
        np.testing.assert_allclose(_ftrl_weights(model.optimizer, slots, rows),
                                   ops.convert_to_numpy(table), rtol=1e-5, atol=1e-6)


def test_rerank_carries_id_0s_row_accumulator():
    """Issue 21's repro: one block, 12 ids, reversed counts."""
    model, layer = _sparse_model(1, {"table_optimizer": "adagrad", "learning_rate": 0.1})
    ids = np.array([[0, 1], [0, 2], [3, 0], [5, 7]] * 3, "int32")
    model.fit(ids, np.ones((12, 1)), batch_size=4, shuffle=False, verbose=0)
    (accumulator,) = [v for v in model.optimizer.variables
                      if v.name.endswith("row_accumulator")]
    before = ops.convert_to_numpy(accumulator)[ops.convert_to_numpy(layer.remap)]
    assert before[0] > 0.1  # id 0 was trained
    rerank_layer(layer, np.arange(12, dtype=float), optimizer=model.optimizer)
    after = ops.convert_to_numpy(accumulator)[ops.convert_to_numpy(layer.remap)]
    np.testing.assert_array_equal(after, before)


def test_one_block_model_predicts_the_same_with_and_without_reranking():
    """With one block nothing moves between blocks: re-ranking every 4 steps
    only permutes rows and their slots, so training is unchanged."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 12, size=(96, 2)).astype("int32")
    y = rng.normal(size=(96, 1)).astype("float32")
    predictions = []
    for callbacks in ([], [FrequencyRecount(every_n_steps=4)]):
        model, layer = _sparse_model(1, {"table_optimizer": "adagrad",
                                         "learning_rate": 0.1})
        model.fit(ids, y, batch_size=8, shuffle=False, verbose=0, callbacks=callbacks)
        predictions.append(ops.convert_to_numpy(model.predict(ids, verbose=0)))
    assert not np.array_equal(ops.convert_to_numpy(layer.remap), np.arange(12))
    np.testing.assert_allclose(predictions[1], predictions[0], rtol=1e-6, atol=1e-7)


def test_replan_keeps_the_dense_optimizers_step_for_its_schedule():
    """After a re-plan the wrapped optimizer's step carries over, so its
    learning-rate schedule goes on (0.1 * 0.1 ** (8 / 8) after 8 steps)."""
    from keras_mixed_dim.optimizers import SparseRowOptimizer

    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=300, dim=8, bag=1)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 8, 0.1)
    model.compile(SparseRowOptimizer(keras.optimizers.Adam(schedule), "adam"), "mse")
    ids = shuffled_zipf_ids(300, 8 * 50)
    old_plan = layer.plan
    model.fit(ids, np.sin(ids), epochs=1, batch_size=50, verbose=0,
              callbacks=[FrequencyRecount(replan=True)])
    assert layer.plan != old_plan  # the optimizer was rebuilt
    dense = model.optimizer.dense_optimizer
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 8
    assert int(ops.convert_to_numpy(dense.iterations)) == 8
    assert float(ops.convert_to_numpy(dense.learning_rate)) == pytest.approx(0.01)
