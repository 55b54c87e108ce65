"""The per-table alpha power rule of the mixed-dimension paper (DLRM's `md_solver`)."""

import numpy as np


def _as_positive_vector(name, values):
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"`{name}` must be a non-empty 1-D sequence. Received: {values!r}"
        )
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(
        array.dtype, np.complexfloating
    ):
        raise ValueError(f"`{name}` must hold real numbers. Received: {values!r}")
    array = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(array) | (array <= 0))
    if bad.size:
        raise ValueError(
            f"`{name}` must hold finite values > 0; {name}[{bad[0]}] = "
            f"{array[bad[0]]!r}."
        )
    return array


def check_alpha(alpha):
    """Returns `alpha` as a float after checking it is finite and >= 0."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"`alpha` must be a number >= 0. Received: {alpha!r}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"`alpha` must be a number >= 0. Received: {alpha!r}")
    return value


def check_one_of_base_dim_or_budget(base_dim, budget):
    """Checks that exactly one of `base_dim` / `budget` is set and is valid."""
    if (base_dim is None) == (budget is None):
        raise ValueError(
            "Pass exactly one of `base_dim` and `budget`. Received: "
            f"base_dim={base_dim!r}, budget={budget!r}"
        )
    if base_dim is not None:
        if isinstance(base_dim, bool) or not float(base_dim).is_integer() or (
            base_dim < 1
        ):
            raise ValueError(
                f"`base_dim` must be an integer >= 1. Received: {base_dim!r}"
            )
    else:
        if isinstance(budget, bool) or not np.isfinite(float(budget)) or (
            budget <= 0
        ):
            raise ValueError(f"`budget` must be a number > 0. Received: {budget!r}")


def round_half_even(values):
    """Rounds to the nearest integer, ties to even (as `torch.round` does)."""
    return np.round(np.asarray(values, dtype=np.float64)).astype(np.int64)


def round_to_power_of_two(dims):
    """Rounds each dim to the nearest power of two in log2 space (ties to even)."""
    dims = np.asarray(dims, dtype=np.float64)
    return (2 ** np.round(np.log2(dims))).astype(np.int64)


def alpha_power_rule(sizes, alpha, base_dim=None, budget=None):
    """Dimensions `lambda * sizes**-alpha` for tables sorted by ascending size.

    Follows DLRM's `alpha_power_rule`: with `base_dim`, the first (smallest)
    table gets exactly `base_dim` and lambda is anchored on it; with `budget`,
    lambda = budget / sum(sizes**(1 - alpha)). Every other dim is clipped to
    at least 1, then all dims are rounded half to even.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    if base_dim is not None:
        lam = base_dim * sizes[0] ** alpha
    else:
        lam = budget / np.sum(sizes ** (1.0 - alpha))
    dims = lam * sizes ** (-alpha)
    dims = np.maximum(dims, 1.0)
    if base_dim is not None:
        dims[0] = base_dim
    return round_half_even(dims)


def md_solver(
    table_sizes,
    alpha,
    base_dim=None,
    budget=None,
    round_dims=False,
    queries_per_inference=None,
):
    """Per-table embedding dimensions from the alpha power rule.

    The semantics are those of `md_solver` in facebookresearch/dlrm
    (`tricks/md_embedding_bag.py`): the popularity of a table is taken as
    `queries / rows`, so smaller tables get larger dimensions.

    Args:
        table_sizes: Rows of each embedding table, in any order.
        alpha: Temperature >= 0. 0 gives every table the same dimension.
        base_dim: The dimension of the smallest (most popular) table; the
            others scale down from it. Exclusive with `budget`.
        budget: A parameter budget B; lambda = B / sum(n**(1 - alpha)), where
            n is the table size divided by `queries_per_inference`.
            Exclusive with `base_dim`.
        round_dims: If True, round each dimension to the nearest power of two.
        queries_per_inference: Optional average number of lookups per
            inference for each table (DLRM's `k`); defaults to 1 per table.

    Returns:
        An int64 numpy array of dimensions, in the order of `table_sizes`.
    """
    alpha = check_alpha(alpha)
    check_one_of_base_dim_or_budget(base_dim, budget)
    sizes = _as_positive_vector("table_sizes", table_sizes)
    if queries_per_inference is None:
        queries = np.ones_like(sizes)
    else:
        queries = _as_positive_vector("queries_per_inference", queries_per_inference)
        if queries.shape != sizes.shape:
            raise ValueError(
                "`queries_per_inference` must have one entry per table: "
                f"got {queries.size} entries for {sizes.size} tables."
            )
    # A stable sort keeps ties in the caller's order; tied tables get equal
    # dims anyway, so this only makes the result deterministic.
    order = np.argsort(sizes, kind="stable")
    dims = alpha_power_rule(
        sizes[order] / queries[order], alpha, base_dim=base_dim, budget=budget
    )
    if round_dims:
        dims = round_to_power_of_two(dims)
    result = np.empty_like(dims)
    result[order] = dims
    return result
