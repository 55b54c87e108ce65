"""The count-min sketch against exact counts: never below them, exact when
the keys do not collide, decayed like counts, bytes as allocated."""

import numpy as np
import pytest

from keras_mixed_dim.dynamic.sketch import CountMinSketch
from keras_mixed_dim.dynamic.sketch import mix64


def test_estimates_never_undercount_and_rarely_overcount():
    rng = np.random.default_rng(0)
    keys = rng.integers(-2**62, 2**62, size=2000)
    draws = keys[rng.zipf(1.3, 20000) % keys.size]
    sketch = CountMinSketch(512, depth=3)
    unique, counts = np.unique(draws, return_counts=True)
    sketch.add(unique, counts)
    estimates = sketch.estimate(unique)
    assert np.all(estimates >= counts)
    # the most counted keys are nearly exact (collisions add only rare ones)
    top = np.argsort(counts)[-10:]
    np.testing.assert_allclose(estimates[top], counts[top], rtol=0.05)


def test_add_returns_the_new_estimates_and_sums_batches():
    sketch = CountMinSketch(1 << 16, depth=2, seed=3)
    keys = np.array([5, 2**63 - 1, -7])
    np.testing.assert_array_equal(sketch.add(keys, [1, 2, 3]), [1, 2, 3])
    np.testing.assert_array_equal(sketch.add(keys[:1], [4]), [5])
    np.testing.assert_array_equal(sketch.estimate(keys), [5, 2, 3])


def test_decay_scales_every_counter():
    sketch = CountMinSketch(64)
    sketch.add(np.array([1, 2]), [8, 4])
    sketch.decay(0.5)
    np.testing.assert_allclose(sketch.estimate(np.array([1, 2])), [4.0, 2.0])
    assert sketch.bytes == 64 * 2 * 4


def test_seeds_give_independent_hashes():
    keys = np.arange(1000)
    assert np.mean(mix64(keys, 0) % 97 == mix64(keys, 1) % 97) < 0.05
    np.testing.assert_array_equal(mix64(keys, 5), mix64(keys, 5))


@pytest.mark.parametrize("width", [0, -3, 2.5, True])
def test_bad_sizes_are_named(width):
    with pytest.raises(ValueError, match="sketch_width"):
        CountMinSketch(width)


@pytest.mark.parametrize("depth,seed,width", [(1, 0, 37), (3, 2**40 + 5, 37),
                                              (2, 7, 64), (1, 3, 1)])
def test_rows_hashed_together_equal_one_mix64_per_row(depth, seed, width):
    """All rows in one pass: the counters of a row-at-a-time reference
    (`mix64` per row, `np.add.at` per row), colliding keys included; a
    power-of-two width (a mask, not a remainder) too."""
    rng = np.random.default_rng(depth)
    keys = np.unique(rng.integers(-2**63, 2**63 - 1, 300, dtype=np.int64))
    counts = rng.integers(1, 5, keys.size)
    sketch = CountMinSketch(width, depth=depth, seed=seed)
    expected = np.zeros((depth, width), np.float32)
    for step in range(3):
        sketch.decay(0.9)
        expected *= np.float32(0.9)
        columns = [(mix64(keys, seed * 131 + r) % np.uint64(width)).astype(np.int64)
                   for r in range(depth)]
        for r in range(depth):
            np.add.at(expected[r], columns[r], counts.astype(np.float32))
        estimates = sketch.add(keys, counts)
        np.testing.assert_array_equal(sketch.counters, expected)
        np.testing.assert_array_equal(
            estimates, np.min([expected[r, columns[r]] for r in range(depth)], axis=0))
