"""Best rank-`k` approximations of tall matrices, exact or through a sketch."""

import dataclasses

import numpy as np

from keras_mixed_dim.sketch.sketches import CHUNK_ROWS
from keras_mixed_dim.sketch.sketches import _as_rows_fn
from keras_mixed_dim.sketch.sketches import gram
from keras_mixed_dim.sketch.sketches import subspace_embedding

# Sketched directions are kept only when their rank-k error is at most this
# many times the exact PCA optimum (Frobenius norms), measured in the pass
# that writes the table; otherwise the exact directions replace them.
MAX_ERROR_RATIO = 1.05


def _top_directions(gram_matrix, k):
    values, vectors = np.linalg.eigh(gram_matrix)
    order = np.argsort(values)[::-1]
    return vectors[:, order[:k]], np.clip(values[order[k:]], 0.0, None).sum()


def principal_directions(matrix, k, num_rows=None, sketch=None, sketch_rows=None,
                         nnz=4, seed=0, chunk_rows=CHUNK_ROWS):
    """Top `k` right singular vectors (`d x k`) of a tall `A`, streamed.

    Exact (the eigenvectors of `A^T A`, accumulated in chunks) when `sketch`
    is None; otherwise those of `B^T B` for the fixed-dimension embedding `B`
    of `subspace_embedding(A, kind=sketch, ...)`.

    Args:
        matrix: `A` (`n x d`) as an array or a `rows_fn(start, stop)`.
        k: Number of directions, in `[1, d]`.
        num_rows: Rows of `A` (with a `rows_fn`).
        sketch: None for exact directions, or a sketch kind.
        sketch_rows, nnz, seed, chunk_rows: As for `subspace_embedding`.

    Returns:
        A float64 `d x k` array with orthonormal columns.

    Example:

    >>> a = np.random.default_rng(0).normal(size=(1000, 16))
    >>> principal_directions(a, 4).shape
    (16, 4)
    """
    rows_fn, num_rows, width = _as_rows_fn(matrix, num_rows)
    _check_k(k, width)
    if sketch is None:
        g = gram(rows_fn, num_rows=num_rows, chunk_rows=chunk_rows)
    else:
        b = subspace_embedding(rows_fn, sketch_rows=sketch_rows, kind=sketch,
                               nnz=nnz, num_rows=num_rows, seed=seed,
                               chunk_rows=chunk_rows)
        g = b.T @ b  # ||B x||^2 = ||S A x||^2 = x^T (A^T S^T S A) x
    return _top_directions(g, k)[0]


@dataclasses.dataclass
class LowRank:
    """A rank-`k` factorization `A ~ table @ directions.T`.

    Attributes:
        table: `A V` (`n x k`, float32).
        directions: `V` (`d x k`, float64, orthonormal columns).
        squared_error: `||A - A V V^T||_F^2`.
        squared_norm: `||A||_F^2`.
        optimum: The exact PCA optimum of `squared_error` (the sum of the
            `d - k` smallest eigenvalues of `A^T A`).
        sketched: Whether the directions came from a sketch.
        fell_back: Whether sketched directions missed `max_error_ratio` and
            the exact ones were used instead.
        weighted_squared_error: With `row_weights`, `sum_i w_i ||a_i -
            V V^T a_i||^2` (else 0).
        weighted_squared_norm: With `row_weights`, `sum_i w_i ||a_i||^2`.

    Example:

    >>> result = low_rank(np.random.default_rng(0).normal(size=(1000, 16)), k=4)
    >>> result.table.shape, result.directions.shape
    ((1000, 4), (16, 4))
    """

    table: np.ndarray
    directions: np.ndarray
    squared_error: float
    squared_norm: float
    optimum: float
    sketched: bool
    fell_back: bool = False
    weighted_squared_error: float = 0.0
    weighted_squared_norm: float = 0.0

    @property
    def relative_error(self):
        """`||A - A V V^T||_F / ||A||_F`."""
        if self.squared_norm <= 0:
            return 0.0
        return float(np.sqrt(self.squared_error / self.squared_norm))

    @property
    def error_ratio(self):
        """Frobenius error over the exact PCA optimum (1 when both are 0)."""
        if self.optimum <= 0:
            return 1.0 if self.squared_error <= 1e-12 * self.squared_norm else np.inf
        return float(np.sqrt(self.squared_error / self.optimum))


def low_rank(matrix, k, num_rows=None, sketch=None, sketch_rows=None, nnz=4,
             seed=0, max_error_ratio=MAX_ERROR_RATIO, chunk_rows=CHUNK_ROWS,
             gram_estimate=None, exact_gram=None, row_weights=None):
    """The rank-`k` PCA factorization of a tall `A`, streamed in chunks.

    Directions come from `principal_directions` (sketched when `sketch` is
    set). One more pass writes the table `A V`, measures the error and
    accumulates `A^T A`, which gives the exact optimum; sketched directions
    whose error exceeds `max_error_ratio` times that optimum are replaced by
    the exact ones (a third pass). So the returned error is always measured,
    never assumed.

    Args:
        matrix: `A` (`n x d`) as an array or a `rows_fn(start, stop)`.
        k: Rank, in `[1, d]`.
        num_rows: Rows of `A` (with a `rows_fn`).
        sketch: None for exact directions, or a sketch kind (`"osnap"`,
            `"gaussian"`, `"countsketch"`).
        sketch_rows, nnz, seed: Passed to the sketch.
        max_error_ratio: The gate on sketched directions (None: no gate).
        chunk_rows: Rows of `A` read at a time.
        gram_estimate: Optional `d x d` matrix (`A^T A`, or `B^T B` of a
            sketch already taken) whose top eigenvectors are the directions;
            saves the first pass. `sketch` then only says whether it came
            from a sketch (for the gate).
        exact_gram: Optional exact `A^T A` when already known (then the
            table pass does not accumulate it again).
        row_weights: Optional per-row weights (e.g. counts) for
            `weighted_squared_error`.

    Returns:
        A `LowRank`.

    Example:

    >>> a = np.random.default_rng(0).normal(size=(10_000, 32))
    >>> result = low_rank(a, k=8, sketch="osnap")
    >>> result.squared_error <= 1.05 * result.optimum
    True
    """
    rows_fn, num_rows, width = _as_rows_fn(matrix, num_rows)
    _check_k(k, width)
    if gram_estimate is not None:
        directions = _top_directions(np.asarray(gram_estimate, np.float64), k)[0]
    else:
        directions = principal_directions(
            rows_fn, k, num_rows=num_rows, sketch=sketch, sketch_rows=sketch_rows,
            nnz=nnz, seed=seed, chunk_rows=chunk_rows,
        )
    if exact_gram is None and sketch is None and gram_estimate is not None:
        exact_gram = gram_estimate
    result, g = _project(rows_fn, num_rows, directions, chunk_rows, exact_gram,
                         row_weights)
    result.sketched = sketch is not None
    if (sketch is not None and max_error_ratio is not None
            and result.error_ratio > max_error_ratio):
        exact = _top_directions(g, k)[0]
        result, _ = _project(rows_fn, num_rows, exact, chunk_rows, g, row_weights)
        result.sketched, result.fell_back = True, True
    return result


def _project(rows_fn, num_rows, directions, chunk_rows, exact_gram=None,
             row_weights=None):
    width, k = directions.shape
    table = np.empty((num_rows, k), dtype=np.float32)
    g = np.zeros((width, width), dtype=np.float64) if exact_gram is None else None
    squared_error = squared_norm = weighted_error = weighted_norm = 0.0
    for start in range(0, num_rows, chunk_rows):
        stop = min(start + chunk_rows, num_rows)
        chunk = np.asarray(rows_fn(start, stop), dtype=np.float64)
        projected = chunk @ directions
        table[start:stop] = projected
        row_norms = np.einsum("ij,ij->i", chunk, chunk)
        # V has orthonormal columns, so ||a - V V^T a||^2 = ||a||^2 -
        # ||V^T a||^2: no reconstruction (a second n x d x k matmul) needed.
        # Clipped at 0 against rounding when a row lies in the span of V.
        row_errors = np.maximum(
            row_norms - np.einsum("ij,ij->i", projected, projected), 0.0)
        squared_error += float(row_errors.sum())
        squared_norm += float(row_norms.sum())
        if row_weights is not None:
            weights = np.asarray(row_weights[start:stop], np.float64)
            weighted_error += float(weights @ row_errors)
            weighted_norm += float(weights @ row_norms)
        if g is not None:
            g += chunk.T @ chunk
    if g is None:
        g = np.asarray(exact_gram, np.float64)
    optimum = _top_directions(g, k)[1]
    result = LowRank(table, directions, squared_error, squared_norm,
                     float(optimum), sketched=False,
                     weighted_squared_error=weighted_error,
                     weighted_squared_norm=weighted_norm)
    return result, g


def _check_k(k, width):
    if isinstance(k, bool) or not float(k).is_integer() or not 1 <= k <= width:
        raise ValueError(f"`k` must be an integer in [1, {width}]. Received: {k!r}")
