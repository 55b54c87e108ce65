"""Synthetic Criteo-like rows."""

import numpy as np
import pytest
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo


def test_synthetic_rows_are_ranked_zipf_and_deterministic():
    generator = SyntheticCriteo(20_000, [1000, 50, 3], seed=1)
    dense, categorical, labels = generator.arrays()
    assert dense.shape == (20_000, 13) and categorical.shape == (20_000, 3)
    counts = np.bincount(categorical[:, 0], minlength=1000)
    assert counts[0] > counts[10] > counts[500]
    assert categorical.max(axis=0).tolist() <= [999, 49, 2]
    assert 0.1 < labels.mean() < 0.6
    again = SyntheticCriteo(20_000, [1000, 50, 3], seed=1).arrays()
    np.testing.assert_array_equal(again[1], categorical)


def test_multi_hot_rows_put_each_feature_bag_in_its_columns():
    one_hot = SyntheticCriteo(500, [1000, 50, 3], seed=2).arrays()
    generator = SyntheticCriteo(500, [1000, 50, 3], seed=2, multi_hot_sizes=[4, 1, 2])
    dense, categorical, labels = generator.arrays()
    assert categorical.shape == (500, 7)
    assert categorical[:, :4].max() <= 999 and categorical[:, 4].max() <= 49
    assert categorical[:, 5:].max() <= 2 and categorical.min() >= 0
    # bags hold different ids, each column Zipf-ranked on its own
    assert np.mean(categorical[:, 0] != categorical[:, 1]) > 0.3
    assert 0.1 < labels.mean() < 0.6
    np.testing.assert_array_equal(
        SyntheticCriteo(500, [1000, 50, 3], seed=2, multi_hot_sizes=[1, 1, 1]).arrays()[1],
        one_hot[1])
    with pytest.raises(ValueError, match="one id per feature"):
        generator.write_raw("/nonexistent/never-written.txt")
    with pytest.raises(ValueError, match="multi_hot_sizes"):
        SyntheticCriteo(5, [10, 10], multi_hot_sizes=[1, 0])
