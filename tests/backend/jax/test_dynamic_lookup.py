"""JAX's slot-table `DynamicEmbedding` lookup against the portable one
(`DynamicEmbedding._vectors` with the backend's lookup switched off) on the
same inputs: outputs and every variable's gradient (`jax.grad`), over
layouts that put the pieces in different variables, with stale tags, slots
and buckets out of range, padding and bags; diverged rows no id reads; the
gates that leave a call to the portable lookup."""

import keras
import numpy as np
import pytest
from keras import ops

# the layers and batches of PyTorch's lookup tests: the same cases
from tests.backend.torch.test_dynamic_lookup import batch_of, make

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="a JAX-only module")

# (tier widths, options): output_dim 4
LAYOUTS = [
    ((4, 2, 1), {"fallback": "qr"}),
    ((4, 2, 1), {"fallback": "hashing"}),
    ((2, 1), {"fallback": "qr"}),             # no full-width piece
    ((4, 2), {"fallback": "qr", "fallback_dim": 4}),   # a full-width fallback
    ((4,), {"fallback": "hashing"}),          # no projection at all
]


def outputs_and_gradients(layer, packed, upstream, weights=None):
    """The layer's outputs and each trainable variable's gradient of
    `sum(outputs * upstream)`, by `jax.grad` of its stateless call."""
    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]
    kwargs = {} if weights is None else {"weights": weights}

    def loss(values):
        outputs, _ = layer.stateless_call(values, fixed, packed, **kwargs)
        return jnp.sum(outputs.astype("float32") * upstream), outputs

    (_, outputs), grads = jax.value_and_grad(loss, has_aux=True)(trainable)
    return np.asarray(outputs), [np.asarray(g) for g in grads]


def assert_same(got, want):
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _serves(layer, packed):
    """Whether the slot table serves a call of `packed`."""
    from keras_mixed_dim.backend.jax import dynamic_lookup

    slots = ops.convert_to_tensor(packed[..., 0])
    return dynamic_lookup.vectors(layer, slots, ops.greater(slots, -1), slots) is not None


@pytest.mark.parametrize("dims,options", LAYOUTS)
def test_outputs_and_gradients_equal_the_portable_path(portable, dims, options):
    layer = make(dims, **options)
    rng = np.random.default_rng(0)
    packed = batch_of(layer, rng)
    assert _serves(layer, packed)
    upstream = rng.normal(size=(24, 4)).astype("float32")
    got = outputs_and_gradients(layer, packed, upstream)
    want = portable(lambda: outputs_and_gradients(layer, packed, upstream))
    assert_same(got, want)
    # every variable's gradient is exercised, and padding reads zeros
    assert all(np.abs(g).sum() > 0 for g in got[1])
    np.testing.assert_array_equal(got[0][3], 0.0)


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_weighted_bags_equal_the_portable_path(portable, combiner):
    layer = make((4, 2, 1), combiner=combiner)
    rng = np.random.default_rng(1)
    packed = batch_of(layer, rng, shape=(6, 4))
    weights = rng.uniform(0.5, 2.0, (6, 4)).astype("float32")
    upstream = rng.normal(size=(6, 4)).astype("float32")
    got = outputs_and_gradients(layer, packed, upstream, weights)
    assert got[0].shape == (6, 4)
    assert_same(got, portable(lambda: outputs_and_gradients(layer, packed, upstream, weights)))


def _poison(layer, part, row, value):
    table = layer.width_tables[layer.layout.buffer[part]]
    values = ops.convert_to_numpy(table).copy()
    values[layer.layout.start[part] + row] = value
    table.assign(values)


def test_a_diverged_row_no_id_reads_gives_no_gradient_nan(portable):
    # every slot's row is projected: one that no id of the batch reads must
    # give its projection no 0 * inf gradient, nor the ids any output NaN
    layer = make((4, 2, 1))
    rng = np.random.default_rng(9)
    packed = batch_of(layer, rng)
    offsets = layer.id_map.offsets
    read = set(packed[:, 0].tolist())
    unread = [s for s in range(int(offsets[1]), int(offsets[2])) if s not in read]
    assert unread
    _poison(layer, "tier_1_embeddings", unread[0] - int(offsets[1]), np.inf)
    upstream = rng.normal(size=(24, 4)).astype("float32")
    got = outputs_and_gradients(layer, packed, upstream)
    want = portable(lambda: outputs_and_gradients(layer, packed, upstream))
    assert np.isfinite(got[0]).all() and all(np.isfinite(g).all() for g in got[1])
    assert_same(got, want)


def test_a_diverged_fallback_row_only_admitted_ids_gather_gives_no_gradient_nan(portable):
    # every id gathers its bucket's quotient and remainder rows: an admitted
    # id's diverged remainder row, times its zero fallback gradient, must not
    # reach the quotient rows or the fallback's projection
    layer = make((4, 2, 1))
    rng = np.random.default_rng(10)
    packed = batch_of(layer, rng)
    remainder = int(layer.plan.fallback_tables[1])
    slots, tags, buckets = packed[:, 0], packed[:, 1], packed[:, 2]
    stored = ops.convert_to_numpy(layer.slot_tags)[np.clip(slots, 0, layer.id_map.num_slots - 1)]
    admitted = (slots >= 0) & (slots < layer.id_map.num_slots) & (tags > 0) & (stored == tags)
    falling = ~admitted & (buckets >= 0) & (buckets < layer.plan.fallback_range)
    # the admitted ids' buckets: one remainder row no fallback reader shares
    packed[admitted, 2] = remainder - 1
    packed[falling, 2] = np.minimum(packed[falling, 2], remainder - 2)
    _poison(layer, "fallback_remainder", remainder - 1, np.inf)
    upstream = rng.normal(size=(24, 4)).astype("float32")
    got = outputs_and_gradients(layer, packed, upstream)
    want = portable(lambda: outputs_and_gradients(layer, packed, upstream))
    assert np.isfinite(got[0]).all() and all(np.isfinite(g).all() for g in got[1])
    assert_same(got, want)


def test_many_slots_per_id_or_a_tapped_table_leave_the_call_to_the_portable_lookup(
        monkeypatch):
    from keras_mixed_dim.backend.jax import dynamic_lookup
    from keras_mixed_dim.backend.jax import sparse_rows

    layer = make((4, 2, 1))
    packed = batch_of(layer, np.random.default_rng(2))
    assert _serves(layer, packed)
    monkeypatch.setattr(dynamic_lookup, "SLOTS_PER_ID", layer.id_map.num_slots // 24 - 1)
    assert not _serves(layer, packed)
    # a bag's ids are counted position by position (what the step gathers),
    # not bag by bag: 24 ids in 6 bags hold as many slots as 24 single ids
    monkeypatch.setattr(dynamic_lookup, "SLOTS_PER_ID", -(-layer.id_map.num_slots // 24))
    assert layer.id_map.num_slots > dynamic_lookup.SLOTS_PER_ID * 6
    assert _serves(layer, packed.reshape(6, 4, -1))
    monkeypatch.undo()
    # a row step traces (its tapped gathers give the rows' gradients)
    monkeypatch.setattr(layer.width_tables[0], sparse_rows.TAP_ATTRIBUTE, object(),
                        raising=False)
    assert not _serves(layer, packed)


def test_mixed_precision_casts_the_outputs_and_equals_the_portable_path(portable,
                                                                         mixed_policy):
    from keras_mixed_dim import DynamicEmbedding
    from tests.layers.test_dynamic_embedding import capacity_for

    keras.utils.set_random_seed(3)
    layer = DynamicEmbedding(4, capacity_for([4, 6], (4, 2)), tier_dims=(4, 2), min_count=1,
                             rebalance_every=0, fallback_buckets=4, sketch_width=16)
    rng = np.random.default_rng(2)
    packed = batch_of(layer, rng)
    assert _serves(layer, packed)
    upstream = rng.normal(size=(24, 4)).astype("float32")
    got = outputs_and_gradients(layer, packed, upstream)
    assert got[0].dtype == np.float16
    assert all(v.dtype == "float32" for v in layer.width_tables)
    assert all(g.dtype == np.float32 for g in got[1])
    want = portable(lambda: outputs_and_gradients(layer, packed, upstream))
    np.testing.assert_allclose(got[0].astype("float32"), want[0].astype("float32"),
                               rtol=1e-3, atol=1e-3)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
