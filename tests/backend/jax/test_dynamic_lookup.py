"""JAX's own `DynamicEmbedding` lookup against the portable `keras.ops` one
(`DynamicEmbedding._vectors` with the dispatch off) on the same weights and
inputs: outputs and the gradient of every variable, with admitted, stale,
out-of-range and padded ids, QR and hashed fallbacks, bags with weights
under each combiner, and the row step of `SparseRowOptimizer`."""

import keras
import numpy as np
import pytest

from keras_mixed_dim import DynamicEmbedding
from keras_mixed_dim import IdSafeModel
from keras_mixed_dim import SparseRowOptimizer
from keras_mixed_dim.layers import dynamic_embedding as module

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="a JAX-only module")


@pytest.fixture
def portable(monkeypatch):
    """Runs the portable lookup while active."""
    def off():
        monkeypatch.setattr(module, "dynamic_lookup", lambda: None)

    return off


def layer_with_ids(fallback, tier_dims, combiner=None, seed=0):
    layer = DynamicEmbedding(8, 12_000, min_count=1, tier_dims=tier_dims, fallback=fallback,
                             combiner=combiner, seed=seed, rebalance_every=2)
    # the second update re-ranks: the ids seen twice move to the wide tier
    layer.update(np.arange(0, 90, 3))
    layer.update(np.arange(0, 30, 3))
    rng = np.random.default_rng(seed)
    admitted = layer.id_map.keys[layer.id_map.used]
    ids = np.where(rng.random((6, 5)) < 0.6, rng.choice(admitted, (6, 5)),
                   rng.integers(1000, 2000, (6, 5)))
    ids[5] = np.arange(0, 15, 3)   # seen twice: the wide tier's
    packed = layer.lookup_ids(ids)
    # stale tags, tag 0, slots out of range, padding and buckets out of range
    packed[0, 0, 1] += 1
    packed[0, 1, 1] = 0
    packed[1, 0, 0], packed[1, 1, 0] = -3, layer.id_map.num_slots + 2
    packed[2, 0] = (-1, 0, -1)
    packed[2, 1] = (-1, 0, layer.plan.fallback_range + 5)
    slots = packed[..., 0]
    tiers = layer.id_map.tier_of[slots[(slots >= 0) & (slots < layer.id_map.num_slots)]]
    assert set(tiers.tolist()) == set(range(len(tier_dims))), tiers
    return layer, packed


def outputs_and_gradients(layer, packed, weights=None):
    import jax

    variables = layer.trainable_variables
    cotangent = np.random.default_rng(1).normal(
        size=layer.compute_output_shape(packed.shape)).astype("float32")

    def loss(values):
        outputs, _ = layer.stateless_call(values, [v.value for v in
                                                   layer.non_trainable_variables],
                                          packed, weights=weights)
        return (outputs * cotangent).sum(), outputs

    (_, outputs), grads = jax.value_and_grad(loss, has_aux=True)(
        [v.value for v in variables])
    return np.asarray(outputs), [np.asarray(g) for g in grads]


def test_jax_dispatches_its_own_lookup():
    from keras_mixed_dim.backend.jax import dynamic_lookup

    assert module.dynamic_lookup() is dynamic_lookup


@pytest.mark.parametrize("fallback,tier_dims", [("qr", (8, 4, 1)), ("hashing", (8,))])
def test_the_lookup_equals_the_portable_one(portable, fallback, tier_dims):
    layer, packed = layer_with_ids(fallback, tier_dims)
    got, got_grads = outputs_and_gradients(layer, packed)
    portable()
    want, want_grads = outputs_and_gradients(layer, packed)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # padding and an out-of-range bucket read zeros
    np.testing.assert_array_equal(got[2, :2], 0.0)
    assert np.abs(got).sum() > 0
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert all(np.abs(g).sum() > 0 for g in got_grads)


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_bags_with_weights_equal_the_portable_lookup(portable, combiner):
    layer, packed = layer_with_ids("qr", (8, 2), combiner=combiner, seed=2)
    weights = np.random.default_rng(3).uniform(0.5, 2.0, packed.shape[:-1]).astype("float32")
    got, got_grads = outputs_and_gradients(layer, packed, weights)
    portable()
    want, want_grads = outputs_and_gradients(layer, packed, weights)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_the_row_step_of_sparse_row_optimizer_equals_the_portable_lookup(portable):
    # the row step taps the gathers (`sparse_rows.take_rows`): the rows it
    # updates must be those the portable lookup reads, with its gradients
    def trained():
        keras.utils.set_random_seed(5)
        layer, packed = layer_with_ids("qr", (8, 4, 1), seed=4)
        ids = keras.Input((3,), dtype="int32")
        model = IdSafeModel(ids, keras.layers.Dense(1)(layer(ids)))
        model.compile(SparseRowOptimizer(keras.optimizers.Adam(0.05),
                                         table_optimizer="adagrad"), "mse")
        x = packed.reshape(-1, 3)
        y = np.linspace(-1, 1, x.shape[0]).astype("float32")[:, None]
        for _ in range(2):
            model.train_on_batch(x, y)
        return [np.asarray(v) for v in model.weights]

    got = trained()
    portable()
    for g, w in zip(got, trained()):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
