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
    ok = isinstance(alpha, (int, float, np.integer, np.floating)) and not isinstance(
        alpha, bool)
    if not ok or not np.isfinite(float(alpha)) or float(alpha) < 0:
        raise ValueError(f"`alpha` must be a number >= 0. Received: alpha={alpha!r}")
    return float(alpha)


def check_one_of_base_dim_or_budget(base_dim, budget):
    """Checks that exactly one of `base_dim` / `budget` is set and is valid."""
    if (base_dim is None) == (budget is None):
        raise ValueError(
            "Pass exactly one of `base_dim` and `budget`. Received: "
            f"base_dim={base_dim!r}, budget={budget!r}"
        )
    if base_dim is not None:
        check_integer("base_dim", base_dim, minimum=1)
    else:
        check_number("budget", budget, positive=True)


# Widest dim a plan may hold: every framework indexes columns with int32.
MAX_DIM = np.iinfo(np.int32).max


def check_integer(name, value, minimum=None, maximum=None):
    """Returns `value` as an int, or raises a ValueError naming `name`.

    Accepts Python and numpy integers and whole-number floats; rejects bools,
    strings and everything else with a message instead of a TypeError.
    """
    whole = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if isinstance(value, (float, np.floating)) and np.isfinite(value):
        whole = float(value).is_integer()
    if not whole:
        raise ValueError(
            f"`{name}` must be an integer. Received: {name}={value!r} "
            f"(of type {type(value).__name__})."
        )
    value = int(value)
    if (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"`{name}` must be an integer {bounds}. Received: {value!r}")
    return value


def check_number(name, value, positive=False):
    """Returns `value` as a finite float, or raises a ValueError naming it."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool)
    if ok:
        value = float(value)
        ok = np.isfinite(value) and (value > 0 or not positive)
    if not ok:
        kind = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    return value


def check_round_dims(round_dims):
    """`round_dims` is False/None (no rounding), True or "pow2" (powers of
    two), or an integer multiple >= 2 (4 or 8 for GPU kernels and FBGEMM)."""
    if round_dims is None or round_dims is False:
        return None
    if round_dims is True or round_dims == "pow2":
        return "pow2"
    if isinstance(round_dims, (int, np.integer)) and not isinstance(round_dims, bool):
        if round_dims >= 2:
            return int(round_dims)
    raise ValueError(
        "`round_dims` must be False, True / 'pow2' (powers of two) or an integer "
        f"multiple >= 2 such as 4 or 8. Received: {round_dims!r}"
    )


def round_dims_by(dims, rule, output_dim=None):
    """Applies a `check_round_dims` rule; never above `output_dim` when given."""
    dims = np.asarray(dims)
    if rule is None:
        rounded = dims
    elif rule == "pow2":
        rounded = round_to_power_of_two(dims)
    else:
        rounded = np.maximum(rule, np.round(dims / rule).astype(np.int64) * rule)
    if output_dim is not None:
        rounded = np.minimum(rounded, output_dim)
    return rounded.astype(np.int64)


def round_half_even(values):
    """Rounds to the nearest integer, ties to even (as `torch.round` does)."""
    return np.round(np.asarray(values, dtype=np.float64)).astype(np.int64)


def round_to_power_of_two(dims):
    """Rounds each dim to the nearest power of two in log2 space (ties to even).

    Args:
        dims: Positive dims (array-like).

    Returns:
        An int64 numpy array of powers of two.

    Example:

    >>> round_to_power_of_two([3, 5, 12])
    array([ 4,  4, 16])
    """
    dims = np.asarray(dims, dtype=np.float64)
    return (2 ** np.round(np.log2(dims))).astype(np.int64)


def alpha_power_rule(sizes, alpha, base_dim=None, budget=None):
    """Dimensions `lambda * sizes**-alpha` for tables sorted by ascending size.

    Follows DLRM's `alpha_power_rule`: with `base_dim`, the first (smallest)
    table gets exactly `base_dim` and lambda is anchored on it; with `budget`,
    lambda = budget / sum(sizes**(1 - alpha)). Every other dim is clipped to
    at least 1, then all dims are rounded half to even.

    Args:
        sizes: Table sizes, sorted ascending.
        alpha: Temperature >= 0.
        base_dim: Dim of the first (smallest) table. Exclusive with `budget`.
        budget: A parameter budget. Exclusive with `base_dim`.

    Returns:
        An int64 numpy array of dims, in the order of `sizes`.

    Example:

    >>> alpha_power_rule(np.array([10, 1000]), 0.5, base_dim=64)
    array([64,  6])
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
    if not np.all(np.isfinite(dims)) or dims.max() > MAX_DIM:
        setting = f"base_dim={base_dim!r}" if base_dim is not None else f"budget={budget!r}"
        raise ValueError(
            f"{setting} gives a dimension of {dims.max():.3g}, beyond the widest "
            f"embedding any backend can index ({MAX_DIM:,}); lower it."
        )
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
        round_dims: False; True or "pow2" to round each dimension to the
            nearest power of two; or an integer such as 4 or 8 to round to
            the nearest multiple of it (at least the multiple).
        queries_per_inference: Optional average number of lookups per
            inference for each table (DLRM's `k`); defaults to 1 per table.

    Returns:
        An int64 numpy array of dimensions, in the order of `table_sizes`.

    Example:

    >>> md_solver([1000, 10], alpha=0.5, base_dim=64)
    array([ 6, 64])
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
    dims = round_dims_by(dims, check_round_dims(round_dims))
    result = np.empty_like(dims)
    result[order] = dims
    return result
