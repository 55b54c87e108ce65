"""The conversion's arithmetic (`keras_mixed_dim.planning.convert`): each
block's rows against numpy's SVD, budgets, auto alpha, sketches, id order,
errors. The layer is built through `mixed_dim_from_embedding`, whose own
tests are tests/compress/test_convert.py."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.compress import mixed_dim_from_embedding
from keras_mixed_dim.planning.convert import convert_weights
from tests.helpers import embedding_with
from tests.helpers import shuffled_counts
from tests.helpers import trained_table


def test_blocks_hold_the_best_low_rank_approximation_of_their_rows():
    weights = trained_table()
    counts = shuffled_counts()
    layer, report = mixed_dim_from_embedding(weights, counts, alpha=0.5,
                                             num_blocks=3, return_report=True)
    order = np.argsort(-counts, kind="stable")
    outputs = ops.convert_to_numpy(layer(np.arange(600)))
    assert report.plan.dims[0] == 16 and min(report.plan.dims) < 16
    for block, block_report in zip(report.plan.blocks, report.blocks):
        ids = order[block.start:block.stop]
        y = weights[ids].astype(np.float64)
        u, s, vt = np.linalg.svd(y, full_matrices=False)
        k = block.dim
        best = (u[:, :k] * s[:k]) @ vt[:k]
        np.testing.assert_allclose(outputs[ids], best, atol=2e-5)
        expected = np.sqrt(np.sum(s[k:] ** 2) / np.sum(s**2))
        assert block_report.relative_error == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_budget_fraction_bounds_every_byte():
    weights = trained_table(dim=32)
    for budget in (0.5, 0.25, 0.125):
        layer, report = mixed_dim_from_embedding(weights, shuffled_counts(),
                                                 budget_fraction=budget,
                                                 return_report=True)
        counted = sum(int(np.prod(w.shape)) * 4 for w in layer.weights)
        assert counted == report.bytes_after
        assert report.bytes_after <= budget * weights.size * 4
        assert report.bytes_after > 0.8 * budget * weights.size * 4
    # a budget in bytes
    _, report = mixed_dim_from_embedding(weights, shuffled_counts(),
                                         budget_bytes=20000,
                                         return_report=True)
    assert 16000 < report.bytes_after <= 20000


def test_the_deprecated_budget_warns_and_converts_as_before():
    weights = trained_table(dim=32)
    counts = shuffled_counts()
    for old, new in ((0.25, dict(budget_fraction=0.25)),
                     (20000, dict(budget_bytes=20000))):
        with pytest.warns(DeprecationWarning, match="mixed_dim_from_embedding.*fraction"):
            layer, report = mixed_dim_from_embedding(weights, counts, budget=old,
                                                     return_report=True)
        again, expected = mixed_dim_from_embedding(weights, counts, return_report=True,
                                                   **new)
        assert report.plan == expected.plan and report.alpha == expected.alpha
        for a, b in zip(layer.get_weights(), again.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_ranked_counts_need_no_remap_and_auto_alpha_beats_fixed_ones():
    weights = trained_table()
    ranked = np.sort(shuffled_counts())[::-1]
    layer, report = mixed_dim_from_embedding(weights, ranked, budget_fraction=0.25,
                                             return_report=True)
    assert layer.remap is None
    for alpha in (0.0, 0.5, 1.0):
        _, fixed = mixed_dim_from_embedding(weights, ranked, budget_fraction=0.25,
                                            alpha=alpha,
                                            return_report=True)
        assert report.weighted_error <= fixed.weighted_error + 1e-6


def test_sketched_blocks_are_gated_against_the_exact_optimum():
    weights = trained_table(rows=5000)
    counts = shuffled_counts(rows=5000)
    _, report = mixed_dim_from_embedding(weights, counts, alpha=0.6, num_blocks=2,
                                         sketch="osnap", sketch_threshold=100,
                                         return_report=True)
    sketched = [b for b in report.blocks if b.sketched]
    assert sketched
    assert all(b.error_ratio <= 1.05 for b in sketched)
    _, exact = mixed_dim_from_embedding(weights, counts, alpha=0.6, num_blocks=2,
                                        sketch=None, return_report=True)
    assert not any(b.sketched for b in exact.blocks)
    for b_sketch, b_exact in zip(report.blocks, exact.blocks):
        assert b_sketch.relative_error <= 1.05 * b_exact.relative_error + 1e-9


def test_bad_inputs_are_named():
    weights = trained_table()
    with pytest.raises(ValueError, match="10 entries but input_dim is 600"):
        mixed_dim_from_embedding(weights, np.ones(10))
    with pytest.raises(ValueError, match="2-D"):
        mixed_dim_from_embedding(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="floating"):
        convert_weights(np.ones((4, 2), dtype=int), np.ones(4))
    bad = weights.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        mixed_dim_from_embedding(bad, shuffled_counts())
    with pytest.raises(ValueError, match="smallest plan"):
        mixed_dim_from_embedding(weights, shuffled_counts(), budget_fraction=0.01)
    with pytest.raises(ValueError, match="lower `num_blocks`"):
        mixed_dim_from_embedding(weights, shuffled_counts(), budget_fraction=0.125)
    with pytest.raises(ValueError, match="budget_bytes"):
        mixed_dim_from_embedding(weights, shuffled_counts(), budget_bytes=-1)
    with pytest.raises(ValueError, match="budget_bytes=4000, budget_fraction=0.5"):
        mixed_dim_from_embedding(weights, shuffled_counts(), budget_bytes=4000,
                                 budget_fraction=0.5)
    with pytest.raises(ValueError, match="sketch"):
        mixed_dim_from_embedding(weights, shuffled_counts(), sketch="fft")
    with pytest.raises(ValueError, match="not built"):
        mixed_dim_from_embedding(keras.layers.Embedding(10, 2), np.ones(10))
    quantized = embedding_with(weights)
    quantized.quantize("int8")
    with pytest.raises(ValueError, match="quantized"):
        mixed_dim_from_embedding(quantized, shuffled_counts())


def test_keep_id_order_cuts_contiguous_blocks_without_a_remap():
    weights = trained_table(dim=16)
    # counts of a ranked vocabulary seen again in new data: nearly sorted
    rng = np.random.default_rng(3)
    counts = rng.poisson(2000.0 / np.arange(1, 601))
    with pytest.raises(ValueError, match="smallest plan"):
        mixed_dim_from_embedding(weights, counts, budget_fraction=0.125)
    layer, report = mixed_dim_from_embedding(weights, counts, budget_fraction=0.125,
                                             keep_id_order=True, return_report=True)
    assert layer.remap is None and report.bytes_after <= 0.125 * weights.size * 4
    cumulative = np.cumsum(counts) / counts.sum()
    for block in report.plan.blocks:
        expected = cumulative[block.stop - 1] - (cumulative[block.start - 1]
                                                 if block.start else 0)
        assert block.mass == pytest.approx(expected)
    # ids stay in place: block 0 holds ids 0 .. rows_0 - 1
    outputs = ops.convert_to_numpy(layer(np.arange(600)))
    first = report.plan.blocks[0]
    y = weights[: first.stop].astype(np.float64)
    u, s, vt = np.linalg.svd(y, full_matrices=False)
    best = (u[:, : first.dim] * s[: first.dim]) @ vt[: first.dim]
    np.testing.assert_allclose(outputs[: first.stop], best, atol=2e-5)


@pytest.mark.parametrize("budget", [[3], "0.5", True, float("nan"), 0])
def test_a_bad_deprecated_budget_is_named(budget):
    # a list or string reached `float()` and raised a TypeError naming nothing
    with pytest.raises(ValueError, match=r"Received: budget="), \
            pytest.warns(DeprecationWarning):
        convert_weights(trained_table(rows=50), shuffled_counts(rows=50), budget=budget)
