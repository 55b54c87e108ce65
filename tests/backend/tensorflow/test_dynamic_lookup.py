"""TensorFlow's `DynamicEmbedding` lookup with its hand-written backward
against the portable `keras.ops` lookup (TensorFlow's own gradients) on the
same inputs: outputs and every variable's gradient, which rows carry one,
and training steps with Keras's Adam and with `SparseRowOptimizer`."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="a TensorFlow-only module")

OPTIONS = {
    "qr": dict(tier_dims=(8, 4, 2)),
    "hashing": dict(tier_dims=(8, 4, 2), fallback="hashing"),
    "one-full-tier": dict(tier_dims=(8,)),
    "full-width-fallback": dict(tier_dims=(4, 2), fallback_dim=8),
    "no-full-tier": dict(tier_dims=(4, 2)),
}


@pytest.fixture
def portable(monkeypatch):
    """A context in which the layer takes the portable lookup."""
    import contextlib

    import keras_mixed_dim.layers.dynamic_embedding as module

    @contextlib.contextmanager
    def use():
        with monkeypatch.context() as patch:
            patch.setattr(module, "dynamic_lookup", lambda: None)
            yield
    return use


def layer_and_ids(options, shape=(40,), combiner=None, seed=0):
    from keras_mixed_dim import DynamicEmbedding

    rng = np.random.default_rng(seed)
    layer = DynamicEmbedding(8, 30_000, min_count=1, seed=3, combiner=combiner,
                             rebalance_every=0, **options)
    layer.update(rng.integers(0, 200, 400))
    packed = layer.lookup_ids(rng.integers(0, 300, shape)).copy()
    flat = packed.reshape(-1, 3)
    flat[::5, 2] = -1                              # padding: no fallback
    flat[1::7, 0] = layer.id_map.num_slots + 2     # a slot out of range
    flat[2::6, 1] += 1                             # a stale tag
    flat[3::9, 2] = layer.plan.fallback_range      # a bucket out of range
    flat[4::8, 0] = -3
    return layer, packed


def step(layer, packed, weights=None, jit_compile=False):
    """Outputs, and the gradients of every width variable (as returned and
    dense), of a weighted sum of the outputs of `layer` (or of a model of
    one layer), in one `tf.function`."""
    import tensorflow as tf

    call = layer
    if isinstance(layer, keras.Model):
        layer = layer.layers[-1]
    shape = packed.shape[:-2] if layer.combiner else packed.shape[:-1]
    upstream = np.random.default_rng(1).normal(size=(*shape, 8)).astype("float32")

    @tf.function(jit_compile=jit_compile)
    def run(ids, weights):
        with tf.GradientTape() as tape:
            outputs = call(ids) if weights is None else call(ids, weights=weights)
            loss = tf.reduce_sum(tf.cast(outputs, "float32") * upstream)
        return outputs, tape.gradient(loss, [t.value for t in layer.width_tables])

    outputs, grads = run(tf.constant(packed), weights)
    return (outputs.numpy(), grads, [tf.convert_to_tensor(g).numpy() for g in grads])


def assert_same(fused, portable):
    np.testing.assert_array_equal(fused[0], portable[0])
    for a, b, dense_a, dense_b in zip(fused[1], portable[1], fused[2], portable[2]):
        np.testing.assert_array_equal(dense_a, dense_b)
        # the same rows get a gradient (SparseRowOptimizer touches them)
        assert type(a).__name__ == type(b).__name__ == "IndexedSlices"
        np.testing.assert_array_equal(np.unique(a.indices.numpy()),
                                      np.unique(b.indices.numpy()))


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_values_and_gradients_equal_the_portable_lookups(name, portable):
    layer, packed = layer_and_ids(OPTIONS[name], shape=(6, 5))
    fused = step(layer, packed)
    with portable():
        assert_same(fused, step(layer, packed))


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_weighted_bags_equal_the_portable_lookups(combiner, portable):
    layer, packed = layer_and_ids(OPTIONS["qr"], shape=(8, 4), combiner=combiner)
    weights = np.random.default_rng(2).uniform(0.1, 2.0, (8, 4)).astype("float32")
    fused = step(layer, packed, weights)
    with portable():
        assert_same(fused, step(layer, packed, weights))


def test_a_diverged_row_reaches_the_same_outputs_and_gradients(portable):
    # the pieces an id does not read are selected away, not multiplied by a
    # zero mask: an inf row stays in its own ids' outputs on both paths
    layer, packed = layer_and_ids(OPTIONS["qr"])
    slots, tags = packed[..., 0], packed[..., 1]
    tags_now = np.array(layer.slot_tags.value)
    offsets = layer.id_map.offsets
    read = (slots >= offsets[1]) & (slots < offsets[-1]) & (tags > 0)
    read[read] = tags_now[slots[read]] == tags[read]
    slot = int(slots[read][0])   # an admitted id of a projected tier
    tier = int(np.searchsorted(offsets, slot, side="right") - 1)
    name = f"tier_{tier}_embeddings"
    table = layer.width_tables[layer.layout.buffer[name]]
    values = np.array(table.value)
    values[layer.layout.start[name] + slot - offsets[tier]] = np.inf
    table.assign(values)
    fused = step(layer, packed)
    np.testing.assert_array_equal(~np.isfinite(fused[0]).all(-1), read & (slots == slot))
    with portable():
        assert_same(fused, step(layer, packed))


def test_xla_compiles_it_and_agrees(portable):
    layer, packed = layer_and_ids(OPTIONS["qr"])
    fused = step(layer, packed, jit_compile=True)
    with portable():
        expected = step(layer, packed, jit_compile=True)
    np.testing.assert_allclose(fused[0], expected[0], atol=1e-6)
    for a, b in zip(fused[2], expected[2]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_mixed_precision_keeps_float32_tables_and_casts_outputs(portable):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer, packed = layer_and_ids(OPTIONS["qr"])
        assert {t.dtype for t in layer.width_tables} == {"float32"}
        inputs = keras.Input((3,), dtype="int32")
        model = keras.Model(inputs, layer(inputs))
        fused = step(model, packed)
        assert fused[0].dtype == np.float16
        with portable():
            assert_same(fused, step(model, packed))
        # called on its own, the layer is in Keras's autocast scope: its
        # gradients still reach the float32 tables
        alone = step(layer, packed)
        assert alone[0].dtype == np.float16
        assert all(g.dtype == np.float32 and np.abs(g).sum() > 0 for g in alone[2])
    finally:
        keras.config.set_dtype_policy(previous)


def train(layer, packed, optimizer, steps=3):
    from keras_mixed_dim import IdSafeModel

    inputs = keras.Input((3,), dtype="int32")
    model = IdSafeModel(inputs, keras.layers.Dense(1, kernel_initializer="ones")(layer(inputs)))
    model.compile(optimizer, "mse")
    targets = np.linspace(-1, 1, len(packed), dtype="float32")[:, None]
    for _ in range(steps):
        model.train_on_batch(packed, targets)
    return [np.array(t.value) for t in layer.width_tables]


@pytest.mark.parametrize("sparse", [False, True], ids=["adam", "sparse-row-adam"])
def test_training_steps_equal_the_portable_lookups(sparse, portable):
    from keras_mixed_dim import SparseRowOptimizer

    def optimizer():
        adam = keras.optimizers.Adam(0.05)
        return SparseRowOptimizer(adam) if sparse else adam

    keras.utils.set_random_seed(4)
    layer, packed = layer_and_ids(OPTIONS["qr"])
    start = [np.array(t.value) for t in layer.width_tables]
    fused = train(layer, packed, optimizer())
    keras.utils.set_random_seed(4)
    again, _ = layer_and_ids(OPTIONS["qr"])
    with portable():
        expected = train(again, packed, optimizer())
    for a, b, before in zip(fused, expected, start):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert not np.array_equal(a, before)
