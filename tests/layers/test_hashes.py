"""The 32-bit lane hashes against their numpy reference, on the current
backend (.ci/run runs tests/layers again under JAX and PyTorch)."""

import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.layers import hashes


def lanes_to_uint(lanes):
    hi, lo = (ops.convert_to_numpy(x).astype(np.uint64) for x in lanes)
    return hi * np.uint64(65536) + lo


def edge_values(size, seed):
    rng = np.random.default_rng(seed)
    edges = [0, 1, 2, 255, 256, 65535, 65536, 65537, 2**24, 2**31 - 2, 2**31 - 1]
    return np.concatenate([edges, rng.integers(0, 2**31, size=size)]).astype(np.int32)


@pytest.mark.parametrize("arity", [1, 2, 3])
def test_hash_matches_the_numpy_reference_bit_for_bit(arity):
    values = [edge_values(3000, seed=t) for t in range(arity)]
    params = hashes.HashParams(seed=11 + arity, arity=arity)
    salts = hashes.random_salts(5, 3)
    expected = hashes.hash_tuple_numpy(np.stack(values, -1)[:, None, :], params, salts)
    lanes = hashes.hash_tuple([ops.convert_to_tensor(v)[:, None] for v in values],
                              params, salts)
    np.testing.assert_array_equal(lanes_to_uint(lanes), expected)


def python_hash(values, params, salt=0):
    """The documented formula with Python integers (no fixed-width dtypes)."""

    def mix(s, multipliers):
        for m in multipliers:
            s = s * int(m) % 2**32
            s ^= s >> 16
        return s

    s = 0
    for t, value in enumerate(values):
        s = mix(s ^ int(value), params.tuple_multipliers[t])
    return mix(s ^ int(salt), params.final_multipliers)


def test_reference_is_the_documented_formula():
    params = hashes.HashParams(seed=3, arity=2)
    salt = int(hashes.random_salts(1, 1)[0])
    for pair in [(0, 0), (1, 2**31 - 1), (123456789, 65536), (2**31 - 1, 2**31 - 1)]:
        got = hashes.hash_tuple_numpy(np.array([pair]), params, salt)
        assert int(got[0]) == python_hash(pair, params, salt), pair


@pytest.mark.parametrize("num_buckets", [1, 3, 1000, 2**16, 2**20 + 7, 2**30 - 1,
                                         2**30])
def test_bucket_reduction_is_exact(num_buckets):
    values = edge_values(2000, seed=1)
    params = hashes.HashParams(seed=2)
    expected = hashes.buckets_numpy(values[:, None], params, num_buckets)
    got = ops.convert_to_numpy(hashes.buckets([ops.convert_to_tensor(values)], params,
                                              num_buckets))
    np.testing.assert_array_equal(got, expected)
    assert got.min() >= 0 and got.max() < num_buckets


def test_signs_match_reference():
    values = edge_values(500, seed=4)
    params = hashes.HashParams(seed=9)
    lanes = hashes.hash_tuple([ops.convert_to_tensor(values)], params)
    np.testing.assert_array_equal(ops.convert_to_numpy(hashes.lanes_sign(lanes)),
                                  hashes.signs_numpy(values[:, None], params))


def test_bucket_usage_is_close_to_uniform():
    # Consecutive ids (the worst case for weak hashes) into 997 buckets:
    # chi-square with 996 degrees of freedom; p ~ 1e-6 above 1200.
    n, m = 200_000, 997
    params = hashes.HashParams(seed=0)
    slots = hashes.buckets_numpy(np.arange(n)[:, None], params, m)
    observed = np.bincount(slots, minlength=m)
    expected = n / m
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 1200, chi2
    # a power-of-two bucket count uses the low bits, the weakest ones
    slots = hashes.buckets_numpy(np.arange(n)[:, None] * 1024, params, 1024)
    observed = np.bincount(slots, minlength=1024)
    chi2 = ((observed - n / 1024) ** 2 / (n / 1024)).sum()
    assert chi2 < 1250, chi2


def test_different_seeds_give_independent_hashes():
    ids = np.arange(50_000)[:, None]
    a = hashes.buckets_numpy(ids, hashes.HashParams(1), 1000)
    b = hashes.buckets_numpy(ids, hashes.HashParams(2), 1000)
    assert abs(np.mean(a == b) - 1e-3) < 1e-3


def test_bad_bucket_counts_are_rejected():
    for bad in (0, 2**30 + 1, True, 2.5):
        with pytest.raises(ValueError, match="num_buckets"):
            hashes.check_num_buckets(bad)
    with pytest.raises(ValueError, match="arity"):
        hashes.HashParams(0, arity=0)


@pytest.mark.parametrize("arity", [1, 3])
def test_uint32_buckets_equal_the_uint64_reference_with_salts(arity):
    """`buckets_numpy` (uint32, in place, column by column) against the
    uint64 `hash_tuple_numpy`, edge values, scalar and per-row salts."""
    params = hashes.HashParams(seed=9, arity=arity)
    values = np.stack([np.roll(edge_values(500, seed=arity), t) for t in range(arity)],
                      axis=-1)
    salts = hashes.random_salts(4, values.shape[0])
    for salt in (0, 0xDEADBEEF, salts):
        for num_buckets in (1, 1000, 2**30):
            expected = (hashes.hash_tuple_numpy(values, params, salt)
                        % np.uint64(num_buckets)).astype(np.int64)
            np.testing.assert_array_equal(
                hashes.buckets_numpy(values, params, num_buckets, salt), expected)
            np.testing.assert_array_equal(hashes.buckets_of_columns(
                [values[:, t] for t in range(arity)], params, num_buckets, salt), expected)
