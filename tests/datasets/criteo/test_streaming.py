"""The streaming synthetic Criteo: reproducible batches, power-law ids, bags,
planted labels, planning counts."""

import numpy as np
import pytest

from keras_mixed_dim.datasets.criteo.streaming import StreamingCriteo
from keras_mixed_dim.datasets.criteo.streaming import default_exponent


def test_batches_depend_on_seed_and_index_only():
    data = StreamingCriteo((1000, 50, 3), 64, multi_hot_sizes=(2, 5, 1), seed=3)
    again = StreamingCriteo((1000, 50, 3), 64, multi_hot_sizes=(2, 5, 1), seed=3)
    late = [again.sparse_ids(i) for i in (5, 2)]  # another order
    for got, index in zip(late, (5, 2)):
        for a, b in zip(got, data.sparse_ids(index)):
            np.testing.assert_array_equal(a, b)
    ids = data.sparse_ids(0)
    assert [a.shape for a in ids] == [(64, 2), (64, 5), (64, 1)]
    assert all(a.dtype == np.int32 and a.min() >= 0 for a in ids)
    assert [a.max() < n for a, n in zip(ids, (1000, 50, 3))] == [True] * 3
    # dlrm(bag_sizes=...)'s input: each bag in consecutive columns
    inputs, _ = data.batch(0)
    np.testing.assert_array_equal(inputs["categorical"][:, 2:7], ids[1])
    assert inputs["categorical"].shape == (64, 8)
    other = StreamingCriteo((1000, 50, 3), 64, multi_hot_sizes=(2, 5, 1), seed=4)
    assert not np.array_equal(other.sparse_ids(0)[0], ids[0])


def test_ids_follow_the_table_power_law():
    rows, exponent = 40_000, default_exponent(40_000)
    data = StreamingCriteo((rows,), 4096, multi_hot_sizes=(8,))
    ids = np.concatenate([data.sparse_ids(i)[0].ravel() for i in range(4)])
    # the continuous power law's CDF: P(rank < k) for a few k
    a = 1.0 - exponent
    for k in (1, 10, 1000, 20_000):
        expected = ((k + 1.0) ** a - 1.0) / ((rows + 1.0) ** a - 1.0)
        assert np.mean(ids < k) == pytest.approx(expected, abs=0.01), k
    assert default_exponent(40_000_000) < exponent < default_exponent(100)


def test_labels_come_from_the_planted_model():
    # the largest feature's hidden values move the click rate
    from keras_mixed_dim.datasets.criteo.synthetic import hidden_value

    data = StreamingCriteo((5000, 7), 8192)
    inputs, labels = data.batch(0)
    assert inputs["dense"].shape == (8192, 13) and labels.shape == (8192, 1)
    assert inputs["categorical"].shape == (8192, 2)
    value = hidden_value(0, inputs["categorical"][:, 0])
    high, low = labels[value > 0.5].mean(), labels[value < -0.5].mean()
    assert high > 1.5 * low


def test_planning_counts_equal_a_bincount_of_the_batches():
    data = StreamingCriteo((300, 20), 50, multi_hot_sizes=(3, 1))
    counts = data.planning_counts(4, features=[0], progress=False)
    ids = np.concatenate([data.sparse_ids(i)[0].ravel() for i in range(4)])
    np.testing.assert_array_equal(counts[0], np.bincount(ids, minlength=300))
    assert counts[1] is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(cardinalities=(10, 0)), "cardinalities"),
    (dict(multi_hot_sizes=(1,)), "multi_hot_sizes"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_settings_are_named(kwargs, match):
    args = {"cardinalities": (10, 5), "batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        StreamingCriteo(**args)
