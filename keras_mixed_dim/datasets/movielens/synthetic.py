"""Synthetic ratings: Zipf popularity, a low-rank ground truth plus noise.

The embedded default of the MovieLens example, so it runs anywhere. With many
items and a high rank the quality of a uniform embedding clearly depends on
its dimension, which is where mixed dimensions pay off.
"""

import numpy as np

from keras_mixed_dim.datasets.movielens.ratings import Ratings


def synthetic_ratings(
    num_users=2_000,
    num_items=5_000,
    num_ratings=200_000,
    rank=16,
    zipf_exponent=1.0,
    noise=0.3,
    seed=0,
):
    """Generates ratings `3.5 + u . v + noise` for Zipf-popular users and items.

    User and item factors are N(0, 1/sqrt(rank)) so `u . v` has unit variance;
    popularity is `1 / (rank + 1)**zipf_exponent` over a random permutation of
    the raw ids (so raw id order says nothing about popularity).

    Args:
        num_users: Number of users.
        num_items: Number of items.
        num_ratings: Number of ratings.
        rank: Rank of the true user and item factors.
        zipf_exponent: Popularity skew of users and items.
        noise: Standard deviation of the Gaussian noise.
        seed: Seed of every draw.

    Returns:
        `Ratings` with raw ids in `[0, num_users)` / `[0, num_items)`, and
        timestamps that count up (rating order).

    Example:

    >>> ratings = synthetic_ratings(num_users=100, num_items=200, num_ratings=1000)
    >>> ratings.ratings.shape
    (1000,)
    """
    for name, value in (
        ("num_users", num_users),
        ("num_items", num_items),
        ("num_ratings", num_ratings),
        ("rank", rank),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1. Received: {value!r}")
    if noise < 0 or zipf_exponent < 0:
        raise ValueError(
            f"`noise` and `zipf_exponent` must be >= 0. Received: noise={noise!r}, "
            f"zipf_exponent={zipf_exponent!r}"
        )
    rng = np.random.default_rng(seed)
    users = _zipf_draws(rng, num_users, num_ratings, zipf_exponent)
    items = _zipf_draws(rng, num_items, num_ratings, zipf_exponent)
    scale = 1.0 / np.sqrt(np.sqrt(rank))
    user_factors = rng.normal(0.0, scale, size=(num_users, rank)).astype(np.float32)
    item_factors = rng.normal(0.0, scale, size=(num_items, rank)).astype(np.float32)
    signal = np.einsum("nk,nk->n", user_factors[users], item_factors[items])
    ratings = 3.5 + signal + rng.normal(0.0, noise, size=num_ratings)
    return Ratings(
        users.astype(np.int64),
        items.astype(np.int64),
        ratings.astype(np.float32),
        np.arange(num_ratings, dtype=np.int64),
    )


def _zipf_draws(rng, num_ids, size, exponent):
    weights = 1.0 / np.arange(1, num_ids + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights / weights.sum())
    ranks = np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), num_ids - 1)
    return rng.permutation(num_ids)[ranks]
