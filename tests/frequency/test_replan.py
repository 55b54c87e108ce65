"""Re-planning (`replan_layer`): new blocks from the counts and the
trained rows, with the optimizer state carried over, on the current backend."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim import FrequencyRecount
from keras_mixed_dim import MixedDimEmbedding
from tests.helpers import counting_model
from tests.helpers import counts_of
from tests.helpers import ftrl_weights
from tests.helpers import shuffled_zipf_ids


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


def test_replan_gives_ftrl_slots_that_keep_the_weights():
    """After a re-plan the fresh FTRL slots reproduce every row's weights,
    so training goes on from the warm start instead of from zero."""
    from keras_mixed_dim.optimizers import SparseRowOptimizer
    from keras_mixed_dim.frequency.rerank import slot_variables

    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=300, dim=8, bag=1)
    model.compile(SparseRowOptimizer(keras.optimizers.Adam(0.01), "ftrl",
                                     table_learning_rate=0.1, l1_regularization_strength=0.001),
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
        np.testing.assert_allclose(ftrl_weights(model.optimizer, slots, rows),
                                   ops.convert_to_numpy(table), rtol=1e-5, atol=1e-6)
