"""Vocabularies and splits of ratings."""

import numpy as np
import pytest
from keras_mixed_dim.datasets import Vocabulary
from keras_mixed_dim.datasets import split_by_time
from keras_mixed_dim.datasets import split_random


def test_vocabulary_ranks_by_frequency_with_an_oov_index():
    vocab = Vocabulary.from_values([7, 3, 3, 9, 9, 9, 5])
    np.testing.assert_array_equal(vocab.tokens, [9, 3, 5, 7])
    np.testing.assert_array_equal(vocab.index_counts, [3, 2, 1, 1, 0])
    np.testing.assert_array_equal(vocab.lookup([9, 7, 42, 3]), [0, 3, 4, 1])
    assert vocab.size == 5 and vocab.oov_index == 4


def test_random_split_is_deterministic_and_disjoint():
    a = split_random(1000, 0.1, 0.1, seed=3)
    b = split_random(1000, 0.1, 0.1, seed=3)
    c = split_random(1000, 0.1, 0.1, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[2], c[2])
    assert [len(p) for p in a] == [810, 90, 100]
    assert len(np.unique(np.concatenate(a))) == 1000


def test_time_split_holds_out_each_users_latest():
    users = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2])
    times = np.array([5, 3, 9, 1, 7, 2, 8, 4, 6, 10, 1, 2])
    train, val, test = split_by_time(users, times, 0.2, 0.25)
    # user 1: 10 ratings -> 2 test (times 10, 9), 2 val (times 8, 7)
    assert sorted(times[test]) == [9, 10] and set(users[test]) == {1}
    assert sorted(times[val]) == [7, 8]
    assert set(times[train][users[train] == 1]) == {1, 2, 3, 4, 5, 6}
    with pytest.raises(ValueError, match="timestamps"):
        split_by_time(users, None)
