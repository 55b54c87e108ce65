"""Synthetic Criteo-like rows."""

import numpy as np
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
