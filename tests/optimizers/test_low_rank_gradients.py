import keras
import numpy as np
import pytest

from keras_mixed_dim.optimizers import LowRankGradients
from keras_mixed_dim.optimizers.low_rank_gradients import tracked_basis


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _tensor(x):
    return keras.ops.convert_to_tensor(np.asarray(x, dtype="float32"))


def _stream(m, n, rank, steps, seed=0, noise=0.3):
    """Gradients with a fixed rank-`rank` column space, drifting row factors
    and strengths, plus dense Gaussian noise."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.normal(size=(m, rank)))[0]
    v0 = rng.normal(size=(n, rank))
    strengths = np.linspace(10.0, 5.0, rank)
    for step in range(steps):
        v = v0 + 0.2 * rng.normal(size=(n, rank))
        g = u @ np.diag(strengths * (1 + 0.1 * step)) @ v.T
        yield (g + noise * rng.normal(size=(m, n))).astype("float32")


@pytest.mark.parametrize("transposed", [False, True])
def test_tracks_truncated_svd_within_three_steps(transposed):
    m, n, rank = 120, 48, 4
    shape = (n, m) if transposed else (m, n)
    kernel = keras.Variable(np.zeros(shape, "float32"), name="kernel")
    bias = keras.Variable(np.zeros((shape[1],), "float32"), name="bias")
    optimizer = LowRankGradients(keras.optimizers.SGD(1.0), rank=rank, min_size=100)
    optimizer.build([kernel, bias])
    ratios = []
    for g in _stream(m, n, rank, steps=6):
        g = g.T if transposed else g
        before = _np(kernel).copy()
        optimizer.apply([_tensor(g), _tensor(np.ones(shape[1]))], [kernel, bias])
        approximation = before - _np(kernel)  # SGD(1): the step is the gradient used
        singular = np.linalg.svd(g, compute_uv=False)
        best = np.sqrt(np.sum(singular[rank:] ** 2))
        ratios.append(np.linalg.norm(g - approximation) / best)
        # the approximation has rank `rank` and lies in the tracked basis
        assert np.linalg.matrix_rank(approximation, tol=1e-4 * singular[0]) == rank
    assert min(ratios[:3]) <= 1.05, ratios
    assert max(ratios[3:]) <= 1.05, ratios
    np.testing.assert_allclose(_np(bias), -np.arange(1, 7)[-1] * np.ones(shape[1]))


def test_basis_is_orthonormal_and_zero_gradient_keeps_it():
    rng = np.random.default_rng(1)
    basis = keras.Variable(np.linalg.qr(rng.normal(size=(30, 3)))[0].astype("float32"))
    g = rng.normal(size=(30, 10)).astype("float32")
    q = _np(tracked_basis(_tensor(g), basis))
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-5)
    same = _np(tracked_basis(_tensor(np.zeros((30, 10))), basis))
    np.testing.assert_array_equal(same, _np(basis))
    # a rank-1 gradient still gives 3 orthonormal directions, the first its own
    rank_one = np.outer(rng.normal(size=30), rng.normal(size=10)).astype("float32")
    q = _np(tracked_basis(_tensor(rank_one), basis))
    assert np.all(np.isfinite(q))
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-4)
    u = np.linalg.svd(rank_one)[0][:, 0]
    assert abs(u @ q[:, 0]) > 0.999


def test_zero_gradient_step_is_harmless():
    kernel = keras.Variable(np.ones((64, 32), "float32"), name="kernel")
    optimizer = LowRankGradients(keras.optimizers.Adam(0.1), rank=2, min_size=0)
    optimizer.build([kernel])
    basis = _np(optimizer.variables[2]).copy()
    optimizer.apply([_tensor(np.zeros((64, 32)))], [kernel])
    np.testing.assert_array_equal(_np(kernel), np.ones((64, 32)))
    np.testing.assert_array_equal(_np(optimizer.variables[2]), basis)
    assert all(np.all(np.isfinite(_np(v))) for v in optimizer.variables)


def test_adam_runs_in_the_subspace():
    """Adam's first step on the coordinates `Q^T G`, mapped back by `Q`."""
    rng = np.random.default_rng(2)
    g = rng.normal(size=(40, 20)).astype("float32")
    kernel = keras.Variable(np.zeros((40, 20), "float32"), name="kernel")
    optimizer = LowRankGradients(keras.optimizers.Adam(0.01, epsilon=1e-7), rank=3,
                                 min_size=0, seed=5)
    optimizer.build([kernel])
    q0 = _np(optimizer.variables[2])
    optimizer.apply([_tensor(g)], [kernel])
    # numpy reference: one power step from the initial basis, then Adam
    y = g @ (g.T @ q0) + 1e-6 * np.sum(g * g) * q0
    q, r = np.linalg.qr(y)
    q = q * np.sign(np.diag(r))
    coordinates = q.T @ g
    # Keras' Adam, first step: lr * m / (sqrt(v) + eps) with bias corrections
    # folded into the rate, i.e. lr * c / (|c| + eps / sqrt(1 - beta_2))
    step = -0.01 * coordinates / (np.abs(coordinates) + 1e-7 / np.sqrt(1 - 0.999))
    np.testing.assert_allclose(_np(kernel), q @ step, rtol=1e-3, atol=1e-6)
    # the moments have the coordinates' shape, not the kernel's
    shapes = sorted(tuple(v.shape) for v in optimizer.variables)
    assert (40, 20) not in shapes and shapes.count((3, 20)) == 3  # shadow, m, v


def _model():
    ids = keras.Input((1,), dtype="int32", name="ids")
    dense = keras.Input((16,), name="dense")
    e = keras.layers.Flatten()(keras.layers.Embedding(500, 256, name="item_embedding")(ids))
    x = keras.layers.Concatenate()([e, dense])
    x = keras.layers.Dense(256, activation="relu", name="hidden_0")(x)
    x = keras.layers.Dense(128, activation="relu", name="hidden_1")(x)
    out = keras.layers.Dense(1, name="out")(x)
    return keras.Model({"ids": ids, "dense": dense}, out)


def test_state_bytes_fall_and_embeddings_biases_are_left_alone():
    exact = keras.optimizers.Adam()
    model = _model()
    exact.build(model.trainable_variables)
    low = LowRankGradients(keras.optimizers.Adam(), rank=4, min_size=4096)
    low.build(model.trainable_variables)
    covered = [v.path for v in model.trainable_variables if low.covers(v)]
    assert covered == ["hidden_0/kernel", "hidden_1/kernel"]

    def state(optimizer, paths):
        # optimizer variables are named after the variable they serve
        return sum(int(np.prod(v.shape)) * 4 for v in optimizer.variables
                   if any(p.replace("/", "_") in v.path for p in paths))

    full = state(exact, covered)
    assert full == 2 * 4 * (272 * 256 + 256 * 128)
    reduced = state(low, covered)
    # basis (long x k) + shadow, first and second moments (k x short) each
    expected = 4 * ((272 * 4 + 3 * 4 * 256) + (256 * 4 + 3 * 4 * 128))
    assert reduced == expected
    assert full / reduced >= 4 * 4  # far beyond the 4x target at k=4
    # the rest of the state is the inner optimizer's, as without the wrapper
    others = [v.path for v in model.trainable_variables if not low.covers(v)]
    assert state(low, others) == state(exact, others)
    assert low.state_bytes() == sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
                                    for v in low.variables)


def test_fit_and_save_round_trip(tmp_path):
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    inputs = keras.Input((32,))
    x = keras.layers.Dense(128, activation="relu")(inputs)
    x = keras.layers.Dense(128, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    features = rng.normal(size=(1024, 32)).astype("float32")
    target = (features[:, :4].sum(1, keepdims=True) ** 2 / 4).astype("float32")
    optimizer = LowRankGradients(keras.optimizers.Adam(3e-3), rank=4, min_size=4096)
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(features, target, batch_size=64, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.85 * losses[0]
    assert int(_np(model.optimizer.iterations)) == 64
    path = tmp_path / "low_rank.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, LowRankGradients)
    assert loaded.optimizer.rank == 4
    assert isinstance(loaded.optimizer.inner_optimizer, keras.optimizers.Adam)
    np.testing.assert_allclose(_np(loaded(features[:8])), _np(model(features[:8])),
                               rtol=1e-5, atol=1e-6)
    saved = {v.path: _np(v) for v in model.optimizer.variables}
    restored = {v.path: _np(v) for v in loaded.optimizer.variables}
    for key, value in saved.items():
        if key in restored:
            np.testing.assert_allclose(restored[key], value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        LowRankGradients("adam", rank=0)
    with pytest.raises(ValueError, match="min_size"):
        LowRankGradients("adam", min_size=-1)
    with pytest.raises(ValueError, match="power_iterations"):
        LowRankGradients("adam", power_iterations=0)
    with pytest.raises(ValueError, match="learning_rate"):
        LowRankGradients("adam", learning_rate=0.1)
    with pytest.raises(ValueError, match="already"):
        LowRankGradients(LowRankGradients("adam"))


def test_weight_decay_of_a_covered_kernel_is_applied():
    """SGD with weight decay: `w - lr * wd * w - lr * Q Q^T g` (numpy)."""
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(40, 20)).astype("float32")
    g = rng.normal(size=(40, 20)).astype("float32")
    kernel = keras.Variable(w0, name="kernel")
    optimizer = LowRankGradients(keras.optimizers.SGD(0.1, weight_decay=0.5), rank=3,
                                 min_size=0, seed=1)
    optimizer.build([kernel])
    optimizer.apply([_tensor(g)], [kernel])
    q = _np(optimizer.variables[2])  # the basis the step used
    expected = w0 - 0.1 * 0.5 * w0 - 0.1 * q @ (q.T @ g)
    np.testing.assert_allclose(_np(kernel), expected, rtol=1e-4, atol=1e-5)


def test_basis_columns_have_fixed_signs():
    """`Q^T Y` has a positive diagonal (`Y` the power step's product), on
    every backend's QR convention: without the sign fix-up a Householder
    QR gives negative ones and the basis flips between steps."""
    for seed in range(4):
        rng = np.random.default_rng(seed)
        basis = keras.Variable(np.linalg.qr(rng.normal(size=(30, 3)))[0].astype("float32"))
        g = np.abs(rng.normal(size=(30, 10))).astype("float32")
        y = g @ (g.T @ _np(basis)) + 1e-6 * np.sum(g * g) * _np(basis)
        q = _np(tracked_basis(_tensor(g), basis))
        assert np.all(np.diag(q.T @ y) > 0), seed
