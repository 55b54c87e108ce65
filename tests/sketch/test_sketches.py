import numpy as np
import pytest

from keras_mixed_dim.sketch import KINDS
from keras_mixed_dim.sketch import distortion
from keras_mixed_dim.sketch import gram
from keras_mixed_dim.sketch import low_rank
from keras_mixed_dim.sketch import principal_directions
from keras_mixed_dim.sketch import sketch
from keras_mixed_dim.sketch import subspace_embedding


def incoherent(rows, width, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, width)) * np.geomspace(1.0, 0.1, width)


def coherent(rows, width, seed=0):
    """`width` orthogonal rows far heavier than the rest (leverage ~ 1)."""
    data = incoherent(rows, width, seed)
    spikes = np.linalg.qr(np.random.default_rng(seed + 1).normal(size=(width, width)))[0]
    data[:width] = spikes * 30 * np.sqrt(rows)
    return data


@pytest.mark.parametrize("kind", KINDS)
def test_sketch_is_the_explicit_linear_map(kind):
    # Sketching the identity gives S itself; sketching A must give S @ A.
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 5))
    s = sketch(np.eye(300), 40, kind=kind, seed=3, chunk_rows=64)
    np.testing.assert_allclose(sketch(a, 40, kind=kind, seed=3, chunk_rows=64),
                               s @ a, rtol=1e-10, atol=1e-10)
    if kind == "gaussian":
        assert np.count_nonzero(s) == s.size
    else:
        nnz = 1 if kind == "countsketch" else 4
        np.testing.assert_array_equal(np.count_nonzero(s, axis=0), nnz)
        np.testing.assert_allclose(np.abs(s[s != 0]), 1 / np.sqrt(nnz))


@pytest.mark.parametrize("kind", KINDS)
def test_fixed_dimension_embedding_keeps_sketched_norms(kind):
    a = incoherent(5000, 8)
    sa = sketch(a, 64, kind=kind, seed=5, chunk_rows=1000)
    b = subspace_embedding(a, 64, kind=kind, seed=5, chunk_rows=1000)
    assert b.shape == (8, 8)
    np.testing.assert_allclose(np.tril(b, -1), 0)
    x = np.random.default_rng(2).normal(size=(8, 20))
    np.testing.assert_allclose(np.linalg.norm(b @ x, axis=0),
                               np.linalg.norm(sa @ x, axis=0), rtol=1e-12)


def test_rows_fn_streams_like_the_array():
    a = incoherent(2000, 6)
    calls = []

    def rows_fn(start, stop):
        calls.append((start, stop))
        return a[start:stop]

    streamed = subspace_embedding(rows_fn, 48, num_rows=2000, seed=1, chunk_rows=300)
    assert max(stop - start for start, stop in calls) <= 300
    np.testing.assert_allclose(
        streamed, subspace_embedding(a, 48, seed=1, chunk_rows=300), rtol=1e-12
    )


def test_distortion_matches_the_definition():
    a = incoherent(400, 5)
    s = sketch(np.eye(400), 60, kind="gaussian", seed=0)
    u = np.linalg.qr(a)[0]
    expected = np.max(np.abs(np.linalg.svd(s @ u, compute_uv=False) ** 2 - 1))
    assert distortion(a, s @ a) == pytest.approx(expected, rel=1e-8)
    # B has the same Gram matrix as S A, hence the same distortion
    b = np.linalg.qr(s @ a, mode="r")
    assert distortion(a, b) == pytest.approx(expected, rel=1e-8)
    assert distortion(a, a) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_distortion_shrinks_with_sketch_rows(kind):
    a = incoherent(20_000, 8)

    def median_distortion(rows):
        return np.median([distortion(a, subspace_embedding(a, rows, kind=kind, seed=s))
                          for s in range(3)])

    few, many = median_distortion(32), median_distortion(1024)
    assert many < 0.35 < few
    assert many < few / 2


def test_countsketch_with_few_rows_is_poor_on_coherent_data():
    a = coherent(20_000, 16)
    # 16 heavy rows in 64 buckets: two of them collide with probability ~0.85,
    # and a collision merges two directions (distortion 1).
    count = [distortion(a, subspace_embedding(a, 64, kind="countsketch", seed=s))
             for s in range(5)]
    gauss = [distortion(a, subspace_embedding(a, 64, kind="gaussian", seed=s))
             for s in range(5)]
    assert max(count) >= 0.99
    assert np.median(count) > np.median(gauss)


def test_gram_and_bad_inputs():
    a = incoherent(100, 3)
    np.testing.assert_allclose(gram(a, chunk_rows=7), a.T @ a)
    with pytest.raises(ValueError, match="kind"):
        sketch(a, 10, kind="fft")
    with pytest.raises(ValueError, match="nnz"):
        sketch(a, 10, kind="osnap", nnz=1)
    with pytest.raises(ValueError, match="sketch_rows"):
        sketch(a, 0)
    with pytest.raises(ValueError, match="num_rows"):
        sketch(lambda start, stop: a[start:stop], 10)
    with pytest.raises(ValueError, match="2-D"):
        sketch(np.ones(5), 10)
    with pytest.raises(ValueError, match="returned shape"):
        sketch(lambda start, stop: a[start:stop, :2] if start else a[start:stop],
               10, num_rows=100, chunk_rows=50)
    with pytest.raises(ValueError, match="zero"):
        distortion(np.zeros((10, 2)), np.zeros((4, 2)))


def test_low_rank_is_measured_and_gated():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    a = (rng.normal(size=(30_000, 16)) * np.geomspace(1, 0.05, 16)) @ basis.T
    exact = low_rank(a, 4, chunk_rows=5000)
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    assert exact.squared_error == pytest.approx(np.sum(s[4:] ** 2), rel=1e-8)
    assert exact.optimum == pytest.approx(np.sum(s[4:] ** 2), rel=1e-8)
    np.testing.assert_allclose(exact.table, a @ exact.directions, rtol=1e-5, atol=1e-5)
    assert exact.relative_error == pytest.approx(
        np.sqrt(np.sum(s[4:] ** 2) / np.sum(s**2)), rel=1e-8)
    sketched = low_rank(a, 4, sketch="osnap", seed=1)
    assert sketched.sketched and sketched.error_ratio <= 1.05
    # a sketch far too small for the gate falls back to exact directions
    poor = low_rank(a, 4, sketch="countsketch", sketch_rows=4, max_error_ratio=1.0001)
    assert poor.fell_back
    assert poor.error_ratio == pytest.approx(1.0, abs=1e-6)
    ungated = low_rank(a, 4, sketch="countsketch", sketch_rows=4, max_error_ratio=None)
    assert ungated.error_ratio > 1.0001 and not ungated.fell_back
    np.testing.assert_allclose(
        np.abs(principal_directions(a, 4).T @ vt[:4].T), np.eye(4), atol=1e-6)
    with pytest.raises(ValueError, match="`k`"):
        low_rank(a, 17)


def test_replan_directions_keep_their_signature():
    from keras_mixed_dim.frequency.replan import principal_directions as replan_dirs

    a = incoherent(5000, 8)
    exact = replan_dirs(lambda start, stop: a[start:stop], 5000, 8, 3)
    np.testing.assert_allclose(np.abs(exact.T @ principal_directions(a, 3)),
                               np.eye(3), atol=1e-8)
