"""Oblivious L2 subspace sketches of a tall matrix, streamed in row chunks.

A sketch `S` (`m x n`) maps the columns of a tall `A` (`n x d`, `n >> m`) to
`S A` (`m x d`) while roughly keeping lengths: `||S A x|| ~ ||A x||` for
every `x`. The fixed-dimension embedding of Magdon-Ismail and Gittens
(arXiv:1909.12580) then keeps only the `d x d` factor `R` of `S A = Q R`,
since `||R x|| = ||Q R x|| = ||S A x||`.

`A` is given either as an array or as `rows_fn(start, stop)` returning rows
`[start, stop)`; it is read once, `chunk_rows` rows at a time, so it never
has to be in memory whole. A sketch is a function of `(kind, sketch_rows,
nnz, seed, chunk_rows)` and the number of rows: the same arguments give the
same `S`.

Numpy only.
"""

import numpy as np

CHUNK_ROWS = 1 << 16
KINDS = ("gaussian", "osnap", "countsketch")


def _as_rows_fn(matrix, num_rows=None):
    """`(rows_fn, num_rows, width)` for an array or a `rows_fn`."""
    if callable(matrix):
        if num_rows is None:
            raise ValueError("With a `rows_fn`, pass `num_rows` too.")
        first = np.asarray(matrix(0, min(1, int(num_rows))))
        if first.ndim != 2:
            raise ValueError(
                f"`rows_fn(start, stop)` must return a 2-D array; it returned "
                f"shape {first.shape}."
            )
        return matrix, int(num_rows), first.shape[1]
    array = np.asarray(matrix)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"The matrix to sketch must be a non-empty 2-D array. Received "
            f"shape {array.shape}."
        )
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"The matrix must be numeric. Received dtype {array.dtype}.")
    if num_rows is not None and num_rows != array.shape[0]:
        raise ValueError(
            f"`num_rows`={num_rows} but the array has {array.shape[0]} rows."
        )
    return (lambda start, stop: array[start:stop]), array.shape[0], array.shape[1]


def _check_int(name, value, low):
    if isinstance(value, bool) or not float(value).is_integer() or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}. Received: {value!r}")
    return int(value)


def sketch(matrix, sketch_rows, kind="osnap", nnz=4, num_rows=None, seed=0,
           chunk_rows=CHUNK_ROWS):
    """`S A` for an oblivious sketch `S` of `sketch_rows` rows.

    Args:
        matrix: The tall `n x d` matrix `A`, as an array or as a function
            `rows_fn(start, stop)` returning its rows `[start, stop)`.
        sketch_rows: Rows `m` of the sketch.
        kind: `"gaussian"` (dense i.i.d. `N(0, 1/m)` entries), `"osnap"`
            (each column of `S` has `nnz` entries `+-1/sqrt(nnz)`, one in
            each of `nnz` equal row groups, so they never collide) or
            `"countsketch"` (OSNAP with one nonzero per column).
        nnz: Nonzeros per column of an OSNAP sketch (>= 2, at most
            `sketch_rows`).
        num_rows: Rows `n` of `A` (required with a `rows_fn`).
        seed: Seed of the random sketch.
        chunk_rows: Rows of `A` read at a time.

    Returns:
        A float64 array of shape `(sketch_rows, d)`.

    Example:

    >>> a = np.random.default_rng(0).normal(size=(100_000, 32))
    >>> sketch(a, 256, kind="osnap").shape
    (256, 32)
    """
    rows_fn, num_rows, width = _as_rows_fn(matrix, num_rows)
    sketch_rows = _check_int("sketch_rows", sketch_rows, 1)
    chunk_rows = _check_int("chunk_rows", chunk_rows, 1)
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: {kind!r}")
    if kind == "countsketch":
        nnz = 1
    elif kind == "osnap":
        nnz = _check_int("nnz", nnz, 2)
        if nnz > sketch_rows:
            raise ValueError(
                f"An OSNAP sketch with nnz={nnz} needs sketch_rows >= nnz. "
                f"Received sketch_rows={sketch_rows}."
            )
    rng = np.random.default_rng(seed)
    result = np.zeros((sketch_rows, width), dtype=np.float64)
    # Row groups of the OSNAP construction: group g is rows [edges[g], edges[g+1]).
    edges = np.linspace(0, sketch_rows, nnz + 1).astype(np.int64) if kind != (
        "gaussian") else None
    for start in range(0, num_rows, chunk_rows):
        stop = min(start + chunk_rows, num_rows)
        chunk = np.asarray(rows_fn(start, stop), dtype=np.float64)
        if chunk.shape != (stop - start, width):
            raise ValueError(
                f"`rows_fn({start}, {stop})` returned shape {chunk.shape}; "
                f"expected {(stop - start, width)}."
            )
        if kind == "gaussian":
            gaussian = rng.standard_normal((sketch_rows, stop - start))
            result += gaussian @ chunk / np.sqrt(sketch_rows)
            continue
        scale = 1.0 / np.sqrt(nnz)
        for group in range(nnz):
            low, high = edges[group], edges[group + 1]
            buckets = rng.integers(low, high, size=stop - start)
            signs = rng.integers(0, 2, size=stop - start) * 2.0 - 1.0
            # Rows sorted by bucket, then one segment sum per bucket: a
            # single pass over the chunk, where a bincount per column (or
            # np.add.at) reads it `width` times or row by row.
            order = np.argsort(buckets, kind="stable")
            sorted_buckets = buckets[order]
            starts = np.flatnonzero(np.concatenate(
                [[True], sorted_buckets[1:] != sorted_buckets[:-1]]))
            signed = chunk[order] * (signs[order] * scale)[:, None]
            result[sorted_buckets[starts]] += np.add.reduceat(signed, starts, axis=0)
    return result


def subspace_embedding(matrix, sketch_rows=None, kind="osnap", nnz=4,
                       num_rows=None, seed=0, chunk_rows=CHUNK_ROWS):
    """The fixed-dimension subspace embedding `B` (`d x d`) of a tall `A`.

    `S A = Q R` for an oblivious sketch `S`; `B = R`, so that `||B x|| =
    ||S A x||` for every `x` (to float precision), and `||S A x||` is within
    `(1 +- eps) ||A x||` for the `eps` the sketch achieves on `A` (see
    `distortion`; the defaults were chosen from the measurements of
    `benchmarks/bench_sketch.py`). Magdon-Ismail and Gittens,
    arXiv:1909.12580.

    Args:
        matrix: `A` as an array or a `rows_fn(start, stop)`.
        sketch_rows: Rows of the sketch; default `default_sketch_rows(kind, d)`.
        kind, nnz, num_rows, seed, chunk_rows: As for `sketch`.

    Returns:
        A float64 upper-triangular `d x d` array.

    Example:

    >>> a = np.random.default_rng(0).normal(size=(100_000, 32))
    >>> b = subspace_embedding(a)
    >>> b.shape
    (32, 32)
    """
    rows_fn, num_rows, width = _as_rows_fn(matrix, num_rows)
    if sketch_rows is None:
        sketch_rows = default_sketch_rows(kind, width)
    sa = sketch(rows_fn, sketch_rows, kind=kind, nnz=nnz, num_rows=num_rows,
                seed=seed, chunk_rows=chunk_rows)
    if sa.shape[0] < width:
        # QR of a wide matrix gives a short R; pad to d x d (zero rows keep norms)
        sa = np.concatenate([sa, np.zeros((width - sa.shape[0], width))])
    return np.linalg.qr(sa, mode="r")


def default_sketch_rows(kind, width):
    """Sketch rows used by default for a `width`-column matrix.

    Chosen from `benchmarks/bench_sketch.py` (100,000 x 32, 3 seeds): at
    `8 d` rows, Gaussian and OSNAP sketches (4 nonzeros per column) measured
    distortions of at most 0.85 (incoherent) and 0.98 (coherent data), and
    rank-`d/4` principal directions from them came within 1.036x of the exact
    PCA error. CountSketch collapses two heavy rows whenever they share a
    bucket (distortion 1.0 on coherent data at every size measured, up to
    `32 d`), so it gets `32 d` rows and is not the default anywhere.

    Args:
        kind: `"gaussian"`, `"osnap"` or `"countsketch"`.
        width: Columns `d` of the matrix.

    Returns:
        The number of sketch rows, an int.

    Example:

    >>> default_sketch_rows("osnap", 32)
    256
    """
    factor = {"gaussian": 8, "osnap": 8, "countsketch": 32}
    if kind not in factor:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: {kind!r}")
    return max(64, factor[kind] * int(width))


def gram(matrix, num_rows=None, chunk_rows=CHUNK_ROWS):
    """`A^T A` (float64), accumulated over row chunks.

    Args:
        matrix: `A` as an array or a `rows_fn(start, stop)`.
        num_rows: Rows of `A` (with a `rows_fn`).
        chunk_rows: Rows of `A` read at a time.

    Returns:
        A float64 `d x d` array.

    Example:

    >>> a = np.arange(6.0).reshape(3, 2)
    >>> np.allclose(gram(a, chunk_rows=2), a.T @ a)
    True
    """
    rows_fn, num_rows, width = _as_rows_fn(matrix, num_rows)
    result = np.zeros((width, width), dtype=np.float64)
    for start in range(0, num_rows, chunk_rows):
        chunk = np.asarray(rows_fn(start, min(start + chunk_rows, num_rows)),
                           dtype=np.float64)
        result += chunk.T @ chunk
    return result


def distortion(matrix, sketched, num_rows=None, rtol=1e-10, chunk_rows=CHUNK_ROWS):
    """Empirical distortion `max_i |sigma_i(S U)^2 - 1|` of a sketch on `A`.

    `U` is an orthonormal basis of the column space of `A`. A sketch is a
    `(1 +- eps)` subspace embedding of `A` exactly when this is at most
    `eps` (for squared norms).

    Args:
        matrix: `A` as an array or a `rows_fn(start, stop)`.
        sketched: `S A` (`m x d`), or the `d x d` embedding `B` of
            `subspace_embedding` (same Gram matrix, same distortion).
        num_rows: Rows of `A` (with a `rows_fn`).
        rtol: Directions of `A` with singular value below `rtol` times the
            largest are left out of the column space.

    Returns:
        A float.

    Example:

    >>> a = np.random.default_rng(0).normal(size=(20_000, 8))
    >>> eps = distortion(a, sketch(a, 64, kind="osnap"))
    >>> 0 < eps < 1
    True
    """
    exact = gram(matrix, num_rows=num_rows, chunk_rows=chunk_rows)
    sketched = np.asarray(sketched, dtype=np.float64)
    if sketched.ndim != 2 or sketched.shape[1] != exact.shape[0]:
        raise ValueError(
            f"`sketched` must have {exact.shape[0]} columns like `A`. Received "
            f"shape {sketched.shape}."
        )
    values, vectors = np.linalg.eigh(exact)
    keep = values > (rtol**2) * max(values.max(), 0.0)
    if not keep.any():
        raise ValueError("`A` is zero: it has no column space to embed.")
    # A = U T with U = A V diag(1/sqrt(lambda)) orthonormal, so
    # (S U)^T (S U) = diag(1/sqrt(l)) V^T (SA)^T (SA) V diag(1/sqrt(l)).
    whiten = vectors[:, keep] / np.sqrt(values[keep])
    su = sketched @ whiten
    singular = np.linalg.svd(su, compute_uv=False)
    squared = np.zeros(int(keep.sum()))
    squared[: singular.size] = singular**2
    return float(np.max(np.abs(squared - 1.0)))
