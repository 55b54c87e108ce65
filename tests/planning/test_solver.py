"""md_solver: hand-computed cases and parity with DLRM's rule."""

import numpy as np
import pytest

from keras_mixed_dim.planning import md_solver
from keras_mixed_dim.planning import round_to_power_of_two


def test_base_dim_anchors_the_smallest_table():
    # lambda = 16 * 10**0.5; d = lambda * n**-0.5 -> 16, 5.06, 1.6
    dims = md_solver([10, 100, 1000], alpha=0.5, base_dim=16)
    np.testing.assert_array_equal(dims, [16, 5, 2])


def test_result_is_in_the_callers_order():
    dims = md_solver([1000, 10, 100], alpha=0.5, base_dim=16)
    np.testing.assert_array_equal(dims, [2, 16, 5])


def test_budget_mode():
    # lambda = 1000 / (sqrt(10) + sqrt(100) + sqrt(1000)) = 22.33
    # d = 7.06, 2.23, 0.71 -> 7, 2, clipped to 1
    dims = md_solver([10, 100, 1000], alpha=0.5, budget=1000)
    np.testing.assert_array_equal(dims, [7, 2, 1])


def test_budget_with_alpha_zero_is_uniform():
    # alpha 0: lambda = B / sum(n); every table B / sum(n) wide.
    dims = md_solver([100, 300], alpha=0.0, budget=400 * 8)
    np.testing.assert_array_equal(dims, [8, 8])


def test_alpha_zero_with_base_dim_is_uniform():
    dims = md_solver([3, 1000, 10**7], alpha=0.0, base_dim=32)
    np.testing.assert_array_equal(dims, [32, 32, 32])


def test_rounding_is_half_to_even():
    # n = [1, 4], alpha 0.5: d(4) = base_dim / 2.
    assert md_solver([1, 4], alpha=0.5, base_dim=5)[1] == 2  # 2.5 -> 2
    assert md_solver([1, 4], alpha=0.5, base_dim=7)[1] == 4  # 3.5 -> 4


def test_tied_table_sizes_get_equal_dims():
    dims = md_solver([100, 10, 100, 10], alpha=0.5, base_dim=16)
    np.testing.assert_array_equal(dims, [5, 16, 5, 16])


def test_dims_never_drop_below_one():
    dims = md_solver([1, 10**9], alpha=1.0, base_dim=4)
    np.testing.assert_array_equal(dims, [4, 1])


def test_power_of_two_rounding():
    np.testing.assert_array_equal(round_to_power_of_two([16, 5, 2, 3, 6, 1]),
                                  [16, 4, 2, 4, 8, 1])
    dims = md_solver([10, 100, 1000], alpha=0.5, base_dim=16, round_dims=True)
    np.testing.assert_array_equal(dims, [16, 4, 2])


def test_queries_per_inference_follow_the_reference():
    # DLRM sorts by n, then applies the rule to n / k: the base dim goes to
    # the smallest table even when another has a smaller n / k.
    dims = md_solver([100, 100], alpha=0.5, base_dim=4,
                     queries_per_inference=[1, 4])
    np.testing.assert_array_equal(dims, [4, 8])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"base_dim": 16, "budget": 100}, "exactly one"),
        ({}, "exactly one"),
        ({"base_dim": 0}, "base_dim"),
        ({"base_dim": 2.5}, "base_dim"),
        ({"budget": -1}, "budget"),
        ({"base_dim": 8, "alpha": -0.1}, "alpha"),
        ({"base_dim": 8, "alpha": float("nan")}, "alpha"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    kwargs = {"alpha": 0.3, **kwargs}
    with pytest.raises(ValueError, match=message):
        md_solver([10, 100], **kwargs)


@pytest.mark.parametrize("sizes", [[], [10, 0], [10, -3], [[1, 2]], ["a"]])
def test_bad_table_sizes(sizes):
    with pytest.raises(ValueError, match="table_sizes"):
        md_solver(sizes, alpha=0.3, base_dim=8)


def test_queries_per_inference_must_match():
    with pytest.raises(ValueError, match="one entry per table"):
        md_solver([10, 100], alpha=0.3, base_dim=8, queries_per_inference=[1])


def test_a_huge_budget_is_an_error_not_a_negative_dim():
    with pytest.raises(ValueError, match="budget=1e\\+30"):
        md_solver([10, 1000], 0.3, budget=1e30)


@pytest.mark.parametrize("multiple", [4, 8])
def test_dims_round_to_multiples(multiple):
    dims = md_solver([10, 20, 1000], 0.3, base_dim=15, round_dims=multiple)
    assert np.all(dims % multiple == 0) and np.all(dims >= multiple)
    unrounded = md_solver([10, 20, 1000], 0.3, base_dim=15)
    # the nearest multiple (not the one below), and never below the multiple
    nearest = np.maximum(multiple, np.round(unrounded / multiple) * multiple)
    np.testing.assert_array_equal(dims, nearest)
    assert np.any(dims > unrounded)  # this plan has dims that round up


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha="0.3", base_dim=8), "alpha"),
    (dict(alpha=0.3, base_dim="8"), "base_dim"),
    (dict(alpha=0.3, budget="100"), "budget"),
    (dict(alpha=0.3, base_dim=8, round_dims=3.5), "round_dims"),
])
def test_bad_argument_types_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        md_solver([10, 100], **kwargs)
