"""Re-ranking (`rerank_layer`): ids move to the blocks their counts earn,
with their rows and optimizer slots, on the current backend."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim import FrequencyRecount
from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.frequency import rerank_layer
from keras_mixed_dim.planning import plan_blocks
from tests.helpers import counting_model
from tests.helpers import ftrl_weights
from tests.helpers import sparse_model


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


@pytest.mark.parametrize("table_optimizer,loss_scaled", [
    ("adagrad", False), ("ftrl", False), ("ftrl", True)])
def test_rerank_moves_per_row_and_ftrl_slots_with_their_ids(table_optimizer, loss_scaled):
    """Row-wise Adagrad's `(rows,)` accumulator (and FTRL's slots) follow
    each id that stays in its block; moved ids restart from the initial
    accumulator."""
    options = {"table_optimizer": table_optimizer, "table_learning_rate": 0.1}
    if table_optimizer == "ftrl":
        options.update(l1_regularization_strength=0.001, l2_regularization_strength=0.01,
                       beta=0.1)
    model, layer = sparse_model(2, options, input_dim=30, loss_scaled=loss_scaled)
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
            np.testing.assert_allclose(ftrl_weights(optimizer, groups[b], row),
                                       row_value, rtol=1e-5, atol=1e-6)
        moved += b != old_b
    assert 0 < moved < 30


def test_rerank_carries_id_0s_row_accumulator():
    """Issue 21's repro: one block, 12 ids, reversed counts."""
    model, layer = sparse_model(1, {"table_optimizer": "adagrad", "table_learning_rate": 0.1})
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
        model, layer = sparse_model(1, {"table_optimizer": "adagrad",
                                         "table_learning_rate": 0.1})
        model.fit(ids, y, batch_size=8, shuffle=False, verbose=0, callbacks=callbacks)
        predictions.append(ops.convert_to_numpy(model.predict(ids, verbose=0)))
    assert not np.array_equal(ops.convert_to_numpy(layer.remap), np.arange(12))
    np.testing.assert_allclose(predictions[1], predictions[0], rtol=1e-6, atol=1e-7)


def test_rerank_refuses_qr_blocks():
    plan = plan_blocks(3000, 8, num_blocks=4, qr_min_rows=100, remap=True)
    layer = MixedDimEmbedding(3000, 8, plan=plan, count_frequencies=True)
    layer.build()
    with pytest.raises(ValueError, match="quotient-remainder"):
        rerank_layer(layer, counts=np.arange(3000, dtype=float) + 1)
