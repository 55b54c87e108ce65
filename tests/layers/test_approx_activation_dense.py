import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_mixed_dim.layers.approx_activation_dense import ApproxActivationDense
from keras_mixed_dim.layers.approx_activation_dense import approximate_activations

BACKEND = keras.backend.backend()


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _grads(model, x, y):
    """Gradients of the mean squared error w.r.t. `[x, *trainable_variables]`."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_mean((model(xt, training=True) - y) ** 2)
        grads = tape.gradient(loss, [xt, *model.trainable_variables])
        return [np.asarray(g) for g in grads]
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def loss(xv, tv):
            out, updated = model.stateless_call(tv, frozen, xv, training=True)
            return jnp.mean((out - y) ** 2), updated

        (gx, gw), updated = jax.grad(loss, argnums=(0, 1), has_aux=True)(x, trainable)
        for variable, value in zip(model.non_trainable_variables, updated):
            variable.assign(value)
        return [np.asarray(gx)] + [np.asarray(g) for g in gw]
    import torch

    xt = torch.tensor(x, requires_grad=True)
    loss = torch.mean((model(xt, training=True) - torch.tensor(y)) ** 2)
    loss.backward()
    return [xt.grad.numpy()] + [v.value.grad.numpy() for v in model.trainable_variables]


def _mlp(depth=6, width=128, inputs=64, seed=1):
    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Dense(width, activation="relu", name=f"hidden_{i}")
              for i in range(depth)]
    return keras.Sequential([keras.Input((inputs,)), *layers,
                             keras.layers.Dense(1, name="out")])


def _teacher_data(batch, inputs=64, seed=0):
    """Inputs and a learnable regression target (so the batch gradient has
    signal, as in training, rather than being pure noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, inputs)).astype("float32")
    w = rng.normal(size=(inputs, 1)).astype("float32") / 8
    y = (np.tanh(x @ w) + np.sin(x[:, :1]) + 1.0).astype("float32")
    return x, y


def _numpy_quantize(x, lo, hi, bits):
    """Independent reference of the grid: 0 on the grid, `2**bits` levels."""
    levels = 2**bits - 1
    step = np.where(hi - lo > 0, (hi - lo) / levels, 1.0)
    zero = np.clip(np.round(-lo / step), 0, levels)
    codes = np.clip(np.round(x / step) + zero, 0, levels)
    return (codes - zero) * step


@pytest.mark.parametrize("activation", ["relu", None, "leaky_relu", "sigmoid"])
def test_forward_is_exact(activation):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 7, 5)).astype("float32")
    layer = ApproxActivationDense(9, bits=4, activation=activation)
    dense = keras.layers.Dense(9, activation=activation)
    layer.build(x.shape)
    dense.build(x.shape)
    dense.set_weights([_np(layer.kernel), _np(layer.bias) + 0.1])
    layer.bias.assign(_np(layer.bias) + 0.1)
    for training in (True, False):
        got = _np(layer(x, training=training))
        assert got.shape == (32, 7, 9)
        np.testing.assert_allclose(got, _np(dense(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", None])
def test_single_layer_gradients_match_numpy_reference(bits, activation):
    rng = np.random.default_rng(1)
    x = np.abs(rng.normal(size=(64, 11))).astype("float32")
    x[:, 3] *= -1.0  # one channel of negative values: the grid spans [lo, hi]
    upstream_target = rng.normal(size=(64, 6)).astype("float32")
    model = keras.Sequential([keras.Input((11,)),
                              ApproxActivationDense(6, bits=bits, activation=activation)])
    layer = model.layers[0]
    gx, gkernel, gbias = _grads(model, x, upstream_target)

    kernel, bias = _np(layer.kernel), _np(layer.bias)
    z = x @ kernel + bias
    if activation == "relu":
        y, slope = np.maximum(z, 0), np.where(z > 0, 1.0, 0.0)
    elif activation == "leaky_relu":
        y, slope = np.where(z > 0, z, 0.2 * z), np.where(z > 0, 1.0, 0.2)
    else:
        y, slope = z, np.ones_like(z)
    dz = 2.0 * (y - upstream_target) / y.size * slope
    lo = np.minimum(x.min(0), 0.0)
    hi = np.maximum(x.max(0), 0.0)
    np.testing.assert_allclose(gx, dz @ kernel.T, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gbias, dz.sum(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gkernel, _numpy_quantize(x, lo, hi, bits).T @ dz,
                               rtol=1e-4, atol=1e-7)
    # and the kernel gradient really is the approximate one
    assert np.abs(gkernel - x.T @ dz).max() > 1e-7
    # the running range is the first batch's range
    np.testing.assert_allclose(_np(layer.input_max), hi)
    np.testing.assert_allclose(_np(layer.input_min), lo)


@pytest.mark.parametrize("bits, tolerance", [(8, 1e-3), (4, 2e-2)])
def test_deep_relu_mlp_gradients(bits, tolerance):
    x, y = _teacher_data(1024)
    exact = _mlp()
    # the first layer reads raw Gaussian inputs (see the docs: its error is
    # that of a signed 7-sigma range); the test is about the hidden layers
    approx = approximate_activations(exact, bits=bits, skip_input_layers=True)
    assert [type(layer).__name__ for layer in approx.layers] == (
        ["Dense"] + ["ApproxActivationDense"] * 6
    )
    expected = _grads(exact, x, y)
    got = _grads(approx, x, y)
    # input gradients and bias gradients are exact (float rounding only)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-9)
    for g, e in zip(got[2::2], expected[2::2]):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-9)
    errors = []
    for g, e in zip(got[3::2], expected[3::2]):  # kernels of converted layers
        errors.append(np.linalg.norm(g - e) / np.linalg.norm(e))
    assert max(errors) <= tolerance, errors
    assert min(errors) > 0.0  # the weight gradient does use the codes


def test_quantization_grid_keeps_zeros_and_bounds_error():
    from keras_mixed_dim.layers.approx_activation_dense import dequantize
    from keras_mixed_dim.layers.approx_activation_dense import quantize

    rng = np.random.default_rng(2)
    x = np.maximum(rng.normal(size=(40, 7)), 0).astype("float32")
    x[:, 0] = rng.normal(size=40)  # a signed channel
    lo, hi = np.minimum(x.min(0), 0), x.max(0)
    for bits in (8, 4):
        codes = quantize(x, lo, hi, bits)
        assert _np(codes).dtype == np.uint8
        assert codes.shape == ((40, 7) if bits == 8 else (40, 4))
        back = _np(dequantize(codes, lo, hi, bits, 7))
        step = (hi - lo) / (2**bits - 1)
        assert np.all(np.abs(back - x) <= step / 2 + 1e-6)
        assert np.all(back[x == 0] == 0)
        np.testing.assert_allclose(back, _numpy_quantize(x, lo, hi, bits), atol=1e-6)


def test_running_range_update():
    layer = ApproxActivationDense(3, range_momentum=0.5)
    first = np.full((4, 2), 2.0, dtype="float32")
    layer(first, training=True)
    np.testing.assert_allclose(_np(layer.input_max), [2.0, 2.0])
    layer(np.full((4, 2), 1.0, dtype="float32"), training=True)
    np.testing.assert_allclose(_np(layer.input_max), [1.5, 1.5])  # decays
    layer(np.full((4, 2), 4.0, dtype="float32"), training=True)
    np.testing.assert_allclose(_np(layer.input_max), [4.0, 4.0])  # never clips the batch
    layer(np.full((4, 2), 9.0, dtype="float32"), training=False)
    np.testing.assert_allclose(_np(layer.input_max), [4.0, 4.0])  # inference: untouched
    np.testing.assert_allclose(_np(layer.input_min), [0.0, 0.0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="bits"):
        ApproxActivationDense(4, bits=3)
    with pytest.raises(ValueError, match="units"):
        ApproxActivationDense(0)
    with pytest.raises(ValueError, match="range_momentum"):
        ApproxActivationDense(4, range_momentum=1.0)
    with pytest.raises(ValueError, match="bits"):
        approximate_activations(_mlp(depth=1), bits=2)
    with pytest.raises(ValueError, match="nope"):
        approximate_activations(_mlp(depth=1), exclude=("nope",))


def test_config_and_keras_round_trip(tmp_path):
    model = _mlp(depth=2, width=8, inputs=5)
    approx = approximate_activations(model, bits=4, exclude=("hidden_1",))
    assert type(approx.get_layer("hidden_1")) is keras.layers.Dense
    layer = approx.get_layer("out")
    assert isinstance(layer, ApproxActivationDense)
    clone = ApproxActivationDense.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    x = np.random.default_rng(3).normal(size=(6, 5)).astype("float32")
    np.testing.assert_allclose(_np(approx(x)), _np(model(x)), rtol=1e-6, atol=1e-6)
    approx(x, training=True)  # sets the running ranges, which must be saved
    path = tmp_path / "approx.keras"
    approx.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("out").bits == 4
    np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_np(loaded.get_layer("out").input_max),
                               _np(layer.input_max))


def test_fit_trains_and_keeps_functional_structure():
    inputs = keras.Input((8,), name="features")
    x = keras.layers.Dense(32, activation="relu", name="a")(inputs)
    x = keras.layers.Dense(32, activation="relu", name="b")(x)
    outputs = keras.layers.Dense(1, name="c")(x)
    model = keras.Model(inputs, outputs)
    assert type(approximate_activations(model).get_layer("a")) is ApproxActivationDense
    approx = approximate_activations(model, bits=8, skip_input_layers=True)
    kinds = {layer.name: type(layer).__name__ for layer in approx.layers}
    assert kinds == {"features": "InputLayer", "a": "Dense",
                     "b": "ApproxActivationDense", "c": "ApproxActivationDense"}
    rng = np.random.default_rng(4)
    features = rng.normal(size=(512, 8)).astype("float32")
    target = (features[:, :1] * features[:, 1:2]).astype("float32")
    approx.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = approx.fit(features, target, batch_size=64, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]
    assert np.all(_np(approx.get_layer("b").input_max) > 0)


def _saved_bytes_jax(bits):
    """Bytes of the residuals `jax.vjp` keeps for a deep MLP's loss, split into
    arrays with a batch dimension (activations) and the rest (weights)."""
    import jax
    import jax.numpy as jnp

    batch = 256
    x, y = _teacher_data(batch, inputs=128)
    model = _mlp(depth=2, width=128, inputs=128)
    if bits:
        model = approximate_activations(model, bits=bits)
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def loss(tv, xv):
        out, _ = model.stateless_call(tv, frozen, xv, training=True)
        return jnp.mean((out - y) ** 2)

    _, vjp = jax.vjp(loss, trainable, x)
    leaves = jax.tree_util.tree_leaves(vjp)
    activations = sum(leaf.nbytes for leaf in leaves
                      if leaf.ndim and leaf.shape[0] == batch)
    return activations


def test_saved_for_backward_bytes_fall_by_32_over_k():
    if BACKEND == "jax":
        saved = {bits: _saved_bytes_jax(bits) for bits in (None, 8, 4)}
    else:
        # measured on JAX, in a child process with the JAX backend
        code = ("import json, test_approx_activation_dense as t; "
                "print(json.dumps({str(b): t._saved_bytes_jax(b) for b in (None, 8, 4)}))")
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.dirname(__file__), *sys.path])
        try:
            import jax  # noqa: F401
        except ImportError:
            pytest.skip("jax is not installed")
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True, timeout=300).stdout
        saved = {None if k == "None" else int(k): v
                 for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    batch, width, layers = 256, 128, 3
    # hidden_0, hidden_1 (128 -> 128, ReLU) and out (128 -> 1), all converted
    float_inputs = 4 * batch * width * layers
    for bits in (8, 4):
        codes = batch * width * layers * bits // 8
        masks = batch * (width // 8) * (layers - 1)
        # what JAX keeps is exactly the codes and the bit masks (and the
        # loss's own `(batch, 1)` float residual)...
        assert saved[bits] == codes + masks + 4 * batch
        # ...so 32 / (K + 1) times fewer bytes than the float inputs (K bits
        # per input value and one mask bit per ReLU output)
        assert float_inputs / saved[bits] >= 0.95 * 32 / (bits + 1)
        # and the exact model keeps at least the float inputs
        assert saved[None] >= float_inputs
        assert saved[None] / saved[bits] >= 0.95 * 32 / (bits + 1)


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's own saved-tensor hooks")
def test_torch_saves_only_codes_and_masks():
    import torch

    x, _ = _teacher_data(256)
    model = approximate_activations(_mlp(depth=3, width=64), bits=4)
    saved = []

    def pack(t):
        if t.dim() and t.shape[0] == 256:
            saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(torch.tensor(x), training=True)
    # hidden_0..2 (64 -> 64, ReLU) and out (64 -> 1): 4-bit codes of four
    # 64-wide inputs and three 64-bit masks per row, nothing else
    assert sum(saved) == 256 * (32 * 4 + 8 * 3)
    del out
