"""Synthetic ratings."""

import numpy as np
from keras_mixed_dim.datasets import synthetic_ratings


def test_synthetic_ratings_follow_zipf_and_low_rank():
    ratings = synthetic_ratings(num_users=500, num_items=2000, num_ratings=50_000,
                                rank=8, noise=0.1, seed=1)
    counts = np.sort(np.bincount(ratings.items, minlength=2000))[::-1]
    assert counts[0] > 20 * np.median(counts[counts > 0])
    assert 0.8 < np.std(ratings.ratings) < 1.3
    again = synthetic_ratings(num_users=500, num_items=2000, num_ratings=50_000,
                              rank=8, noise=0.1, seed=1)
    np.testing.assert_array_equal(ratings.ratings, again.ratings)
