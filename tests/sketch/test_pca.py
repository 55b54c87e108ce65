"""`low_rank`'s measured errors against numpy."""

import numpy as np

from keras_mixed_dim.sketch import low_rank


def test_weighted_error_weighs_each_rows_error():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(300, 6)) * np.geomspace(1, 0.05, 6)
    weights = rng.zipf(1.5, 300).astype(np.float64)
    result = low_rank(matrix, 2, row_weights=weights, chunk_rows=64)
    v = result.directions
    row_errors = np.sum((matrix - matrix @ v @ v.T) ** 2, axis=1)
    np.testing.assert_allclose(result.weighted_squared_error, weights @ row_errors,
                               rtol=1e-9)
    np.testing.assert_allclose(result.weighted_squared_norm,
                               weights @ np.sum(matrix**2, axis=1), rtol=1e-9)
    np.testing.assert_allclose(result.squared_error, row_errors.sum(), rtol=1e-9)
