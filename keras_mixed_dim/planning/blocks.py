"""Frequency blocks inside one feature: ranking, cutting and sizing."""

import dataclasses
import math

import numpy as np

from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.budgets import REMAP_BYTES
from keras_mixed_dim.budgets import Budget
from keras_mixed_dim.budgets import BudgetTooSmall
from keras_mixed_dim.budgets import budget_of
from keras_mixed_dim.budgets import check_budget_bytes
from keras_mixed_dim.budgets import uniform_bytes
from keras_mixed_dim.budgets import warn_budget_deprecated
from keras_mixed_dim.budgets import refuse_budget_with_new
from keras_mixed_dim.planning.plan import Block
from keras_mixed_dim.planning.plan import BlockPlan
from keras_mixed_dim.planning.solver import check_alpha
from keras_mixed_dim.planning.solver import check_integer
from keras_mixed_dim.planning.solver import check_number
from keras_mixed_dim.planning.solver import check_round_dims
from keras_mixed_dim.planning.solver import round_dims_by
from keras_mixed_dim.planning.solver import round_half_even


def check_counts(counts, input_dim=None):
    """Returns `counts` as a float64 vector after checking its values."""
    array = np.asarray(counts)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"`counts` must be a non-empty 1-D array of per-id counts. "
            f"Received shape {array.shape}."
        )
    if not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(f"`counts` must be numeric. Received dtype {array.dtype}.")
    array = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(array) | (array < 0))
    if bad.size:
        raise ValueError(
            f"`counts` must be finite and >= 0; counts[{bad[0]}] = "
            f"{array[bad[0]]!r}."
        )
    if input_dim is not None and array.size != input_dim:
        raise ValueError(
            f"`counts` has {array.size} entries but input_dim is {input_dim}."
        )
    top = array.max()
    if top <= 0:
        raise ValueError("`counts` sum to zero: there is no popularity to rank by.")
    # Only ratios matter; scaling by the maximum keeps sums of huge counts
    # (1e308 each) finite, so masses never become inf / inf = NaN.
    return array / top


def rank_ids(counts):
    """Ids ordered from most to least frequent, ties broken by smaller id.

    Args:
        counts: Per-id counts (or any popularity scores).

    Returns:
        An int64 array `order` with `order[rank] = id`.

    Example:

    >>> rank_ids(np.array([1, 5, 5, 0]))
    array([1, 2, 0, 3])
    """
    counts = check_counts(counts)
    return np.argsort(-counts, kind="stable").astype(np.int64)


def ranks_of_ids(order):
    """Inverse of `rank_ids`: `ranks[id] = rank`.

    Args:
        order: Ids in rank order (from `rank_ids`).

    Returns:
        An int64 array with `ranks[order[r]] = r`.

    Example:

    >>> ranks_of_ids(np.array([1, 2, 0, 3]))
    array([2, 0, 1, 3])
    """
    order = np.asarray(order)
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size, dtype=order.dtype)
    return ranks


def zipf_counts(num_ids, exponent=1.0):
    """Expected counts `1 / (rank + 1)**exponent` of an already ranked vocabulary.

    Args:
        num_ids: Number of ids.
        exponent: Zipf exponent.

    Returns:
        A float64 array of `num_ids` counts, non-increasing.

    Example:

    >>> zipf_counts(4)
    array([1.        , 0.5       , 0.33333333, 0.25      ])
    """
    return 1.0 / np.arange(1, num_ids + 1, dtype=np.float64) ** exponent


def equal_mass_boundaries(sorted_counts, num_blocks):
    """Cuts a ranking into `num_blocks` blocks holding equal probability mass.

    Each boundary is the smallest number of top ranks whose mass reaches
    `k / num_blocks` of the total. Every block keeps at least one row, so when
    a few ids hold most of the mass the first blocks are a single id each.

    Args:
        sorted_counts: Counts in rank order (non-increasing).
        num_blocks: Number of blocks, between 1 and the number of ids.

    Returns:
        A tuple of `num_blocks + 1` offsets, from 0 to the number of ids.

    Example:

    >>> equal_mass_boundaries(np.array([4, 2, 1, 1]), 2)
    (0, 1, 4)
    """
    sorted_counts = np.asarray(sorted_counts, dtype=np.float64)
    num_ids = sorted_counts.size
    _check_num_blocks(num_blocks, num_ids)
    cumulative = np.cumsum(sorted_counts)
    total = cumulative[-1]
    offsets = [0]
    for k in range(1, num_blocks):
        stop = int(np.searchsorted(cumulative, total * k / num_blocks, "left")) + 1
        stop = max(stop, offsets[-1] + 1)
        stop = min(stop, num_ids - (num_blocks - k))
        offsets.append(stop)
    offsets.append(num_ids)
    return tuple(offsets)


def check_boundaries(boundaries, num_ids):
    """Turns explicit cut points into offsets `(0, b_1, ..., num_ids)`."""
    if isinstance(boundaries, (str, bytes)) or not hasattr(boundaries, "__iter__"):
        raise ValueError(
            "`boundaries` must be a sequence of rank cut points such as "
            f"[100, 10_000]. Received: {boundaries!r}"
        )
    cuts = [check_integer(f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
    offsets = [0] + cuts + [num_ids]
    for left, right in zip(offsets[:-1], offsets[1:]):
        if right <= left:
            raise ValueError(
                f"`boundaries` must be strictly increasing ranks in "
                f"(0, {num_ids}). Received: {list(boundaries)!r}"
            )
    return tuple(offsets)


def block_dims(rows, masses, alpha, output_dim, base_dim=None, budget_bytes=None,
               round_dims=False, budget=None):
    """Sizes blocks with the power rule d_i = lambda * p_i**alpha.

    `p_i = masses[i] / rows[i]` is the probability of one id of block `i`.
    With no budget, lambda makes the most popular block `base_dim` wide
    (default `output_dim`). With `budget_bytes`, lambda is the largest value
    whose float32 tables plus projections fit in `budget_bytes`. Dims are
    rounded half to even and clipped to `[1, output_dim]`.

    Args:
        rows: Rows of each block.
        masses: Probability mass of each block.
        alpha: Temperature >= 0 of the power rule.
        output_dim: The common dimension; the largest dim allowed.
        base_dim: Dim of the most popular block (default `output_dim`);
            exclusive with a budget.
        budget_bytes: Bytes of tables plus projections (float32).
        round_dims: As in `plan_blocks`.
        budget: Deprecated: a budget in parameters (`budget_bytes / 4`).

    Returns:
        A tuple of int dims.

    Example:

    >>> block_dims([10, 1000], [0.5, 0.5], alpha=0.5, output_dim=64)
    (64, 6)
    >>> block_dims([10, 90], [0.5, 0.5], 0.5, 8, budget_bytes=4 * 300)
    (5, 2)
    """
    if budget is not None:
        warn_budget_deprecated("block_dims", "a number of parameters (tables plus "
                               "projections)", "budget_bytes=4 * budget")
        if budget_bytes is not None:
            raise ValueError(
                "Pass at most one of `budget_bytes` and the deprecated `budget`. "
                f"Received: budget_bytes={budget_bytes!r}, budget={budget!r}")
        check_number("budget", budget, positive=True)
        return _block_dims(rows, masses, alpha, output_dim, base_dim, float(budget),
                           round_dims, budget_in_params("budget", budget))
    if budget_bytes is not None:
        budget = Budget("budget_bytes", budget_bytes, check_budget_bytes(budget_bytes))
        return _block_dims(rows, masses, alpha, output_dim, base_dim,
                           budget.bytes / FLOAT_BYTES, round_dims,
                           lambda params, detail: budget.too_small(
                               FLOAT_BYTES * params, detail))
    return _block_dims(rows, masses, alpha, output_dim, base_dim, None, round_dims,
                       None)


def budget_in_params(name, value, extra_params=0):
    """The error maker of a too small budget counted in parameters (the
    deprecated `budget=` arguments), naming it and its smallest value."""

    def too_small(params, detail):
        error = BudgetTooSmall(name, value, int(math.ceil(params + extra_params)),
                               f"parameters; {detail}")
        if value < 1:
            # the old layer argument counted parameters; 0.0625 was meant
            # as a fraction more often than not
            error.args = (error.args[0] + " A value below 1 reads as a count of "
                          f"parameters here: pass budget_fraction={value!r} for a "
                          "fraction of the uniform table.",)
        return error

    return too_small


def _block_dims(rows, masses, alpha, output_dim, base_dim, params, round_dims,
                too_small):
    """`block_dims` with the budget in parameters; `too_small(params,
    detail)` makes the error of a budget below the smallest plan."""
    alpha = check_alpha(alpha)
    rows = np.asarray(rows, dtype=np.float64)
    masses = np.asarray(masses, dtype=np.float64)
    popularity = (masses / rows) ** alpha
    if params is not None and base_dim is not None:
        raise ValueError(
            "Pass at most one of `base_dim` and a budget. Received: "
            f"base_dim={base_dim!r} and a budget of {params!r} parameters"
        )

    rule = check_round_dims(round_dims)

    def dims_for(lam):
        dims = round_half_even(np.clip(lam * popularity, 1.0, output_dim))
        return np.clip(round_dims_by(dims, rule, output_dim), 1, output_dim)

    def params_for(dims):
        projections = np.where(dims != output_dim, dims * output_dim, 0)
        return float(np.sum(rows * dims) + np.sum(projections))

    if params is None:
        base_dim = output_dim if base_dim is None else base_dim
        check_integer("base_dim", base_dim, minimum=1, maximum=output_dim)
        top = popularity.max()
        dims = dims_for(base_dim / top) if top > 0 else np.ones(rows.size, int)
        return tuple(int(d) for d in dims)

    narrowest = dims_for(0.0)
    smallest = params_for(narrowest)
    if smallest > params:
        raise too_small(smallest, f"every block at its narrowest dim "
                        f"({int(narrowest.min())}): {int(smallest):,} parameters")
    positive = popularity[popularity > 0]
    if positive.size == 0:
        return tuple(1 for _ in rows)
    # Bisect lambda in log space between "every dim is 1" and "every dim is
    # output_dim"; rounding makes params a step function, so keep the best
    # feasible plan seen rather than trusting monotonicity.
    low = np.log(0.5 / positive.max())
    high = np.log((output_dim + 0.5) / positive.min())
    best = narrowest
    if params_for(dims_for(np.exp(high))) <= params:
        return tuple(int(d) for d in dims_for(np.exp(high)))
    for _ in range(100):
        middle = 0.5 * (low + high)
        dims = dims_for(np.exp(middle))
        if params_for(dims) <= params:
            low = middle
            if params_for(dims) >= params_for(best):
                best = dims
        else:
            high = middle
    return tuple(int(d) for d in best)


def plan_blocks(
    input_dim,
    output_dim,
    counts=None,
    num_blocks=4,
    boundaries=None,
    alpha=0.3,
    base_dim=None,
    budget_bytes=None,
    round_dims=False,
    remap=None,
    qr_min_rows=None,
    qr_collisions=None,
    budget_fraction=None,
    budget=None,
    held_bytes=0,
):
    """Plans the frequency blocks of one feature.

    Ids are ranked by `counts` (ties by id); the ranking is cut into
    `num_blocks` blocks of equal probability mass, or at explicit
    `boundaries`; each block is sized with the alpha power rule.

    Args:
        input_dim: Number of ids.
        output_dim: The common dimension every block projects to.
        counts: Optional per-id counts. Without them, ids are taken as ranked
            already (id 0 most frequent) with Zipf popularity `1 / (id + 1)`.
        num_blocks: Number of equal-mass blocks (ignored with `boundaries`).
        boundaries: Optional explicit cut points in rank space, e.g.
            `[100, 10_000]` for three blocks.
        alpha: Temperature >= 0 of the power rule; 0 makes every block
            `output_dim` wide.
        base_dim: Dim of the most popular block (default `output_dim`).
        budget_bytes: Alternative to `base_dim`: the bytes of the plan
            (`plan.bytes`: float32 tables, projections and the id -> rank
            table), plus `held_bytes`.
        round_dims: False; True / "pow2" to round dims to powers of two; or
            an integer multiple such as 4 or 8 (GPU kernels and FBGEMM need
            dims divisible by 4). A budget is still respected.
        remap: Whether the layer keeps an id -> rank table. Default: only when
            the ranking from `counts` is not the identity. Force it for a
            layer whose ranking will change (see `FrequencyRecount`).
        qr_min_rows: Optional: every block of more than this many rows
            stores its rows as a quotient-remainder pair (MD + QR,
            arXiv:1909.02107) instead of a full table. The dims are sized
            first (a budget counts full tables); QR then shrinks the big
            blocks, so `plan.params` / `plan.bytes` are below the budget.
        qr_collisions: Optional callable `rows -> m` or integer for the
            remainder rows of QR blocks; default `ceil(sqrt(rows))`, the
            fewest parameters.
        budget_fraction: Alternative to `budget_bytes`: a fraction in
            (0, 1] of the uniform float32 table's bytes
            (`4 * input_dim * output_dim`).
        budget: Deprecated: a number of parameters (tables plus
            projections; the remap not counted).
        held_bytes: Bytes the budget also pays for besides the plan (a
            layer's frequency counts).

    Returns:
        A `BlockPlan`.

    Raises:
        ValueError: when both budgets are given, or a budget is below the
            smallest plan (naming the value and the minimum).

    Example:

    >>> plan = plan_blocks(10_000, 32, num_blocks=3, alpha=0.3)
    >>> plan.input_dim, len(plan.blocks), plan.dims[0]
    (10000, 3, 32)
    >>> print(plan)                                         # doctest: +SKIP
    >>> plan = plan_blocks(1000, 32, num_blocks=2, budget_fraction=0.0625)
    >>> plan.bytes <= 0.0625 * 4 * 1000 * 32
    True
    """
    input_dim = check_integer("input_dim", input_dim, minimum=1)
    output_dim = check_integer("output_dim", output_dim, minimum=1)
    check_alpha(alpha)
    if budget is not None:
        warn_budget_deprecated("plan_blocks", "a number of parameters (tables "
                               "plus projections)", "budget_bytes")
        refuse_budget_with_new(budget, budget_bytes, budget_fraction)
        check_number("budget", budget, positive=True)
    spend = budget_of(budget_bytes, budget_fraction, uniform_bytes(input_dim, output_dim))
    if counts is None:
        sorted_counts = zipf_counts(input_dim)
        identity = True
    else:
        counts = check_counts(counts, input_dim)
        order = rank_ids(counts)
        sorted_counts = counts[order]
        identity = bool(np.all(order == np.arange(input_dim)))
    if remap is None:
        remap = not identity
    elif not remap and not identity:
        raise ValueError(
            "`remap=False` needs `counts` already in rank order (non-increasing), "
            "otherwise ids would land in the wrong blocks."
        )
    if boundaries is not None:
        offsets = check_boundaries(boundaries, input_dim)
    else:
        offsets = equal_mass_boundaries(sorted_counts, num_blocks)
    cumulative = np.concatenate([[0.0], np.cumsum(sorted_counts)])
    total = cumulative[-1]
    starts, stops = np.asarray(offsets[:-1]), np.asarray(offsets[1:])
    masses = (cumulative[stops] - cumulative[starts]) / total
    if budget is not None:
        params, too_small = float(budget), budget_in_params("budget", budget)
    elif spend is not None:
        # the remap and what the layer holds besides the plan come first
        fixed = (input_dim * REMAP_BYTES if remap else 0) + held_bytes
        params = (spend.bytes - fixed) / FLOAT_BYTES

        def too_small(smallest, detail):
            return spend.too_small(FLOAT_BYTES * smallest + fixed, detail)

    else:
        params, too_small = None, None
    dims = _block_dims(stops - starts, masses, alpha, output_dim, base_dim, params,
                       round_dims, too_small)
    blocks = tuple(
        _storage(Block(start=int(a), stop=int(b), dim=d, mass=float(m)),
                 qr_min_rows, qr_collisions)
        for a, b, d, m in zip(starts, stops, dims, masses)
    )
    return BlockPlan(input_dim, output_dim, blocks, remapped=bool(remap))


def _storage(block, qr_min_rows, qr_collisions):
    """`block` as a QR block when it has more than `qr_min_rows` rows."""
    if qr_min_rows is None:
        return block
    if isinstance(qr_min_rows, bool) or not float(qr_min_rows).is_integer() or (
        qr_min_rows < 1
    ):
        raise ValueError(f"`qr_min_rows` must be an integer >= 1. Received: "
                         f"{qr_min_rows!r}")
    if block.rows <= qr_min_rows:
        return block
    if qr_collisions is None:
        m = math.isqrt(block.rows - 1) + 1
    elif callable(qr_collisions):
        m = qr_collisions(block.rows)
    else:
        m = qr_collisions
    m = min(int(m), block.rows)
    return dataclasses.replace(block, storage="qr", num_collisions=m)


def _check_num_blocks(num_blocks, num_ids):
    check_integer("num_blocks", num_blocks)
    if not 1 <= num_blocks <= num_ids:
        raise ValueError(
            f"`num_blocks` must be an integer in [1, {num_ids}] (the number of "
            f"ids). Received: {num_blocks!r}"
        )
