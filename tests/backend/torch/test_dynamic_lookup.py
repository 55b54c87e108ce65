"""PyTorch's own `DynamicEmbedding` lookup against the portable one (autograd
of the `keras.ops` path, `DynamicEmbedding._vectors` with the backend's
lookup switched off) on the same inputs: outputs and every variable's
gradient, over layouts that put the pieces in different lanes, with stale
tags, slots and buckets out of range, padding, bags and mixed precision;
the sparse gradients a `SparseRowOptimizer` takes; a diverged row's
gradient; training with Keras's Adam."""

import weakref

import keras
import numpy as np
import pytest
from keras import ops

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="a PyTorch-only module")

# (tier widths, options): every layout's lanes differ (output_dim 4)
LAYOUTS = [
    ((4, 2, 1), {"fallback": "qr"}),          # the narrowest tier shares the quotient's lane
    ((4, 2, 1), {"fallback": "hashing"}),
    ((4, 2, 2), {"fallback": "qr"}),          # two tiers share the quotient's lane
    ((2, 1), {"fallback": "qr"}),             # no full-width piece
    ((4, 2), {"fallback": "qr", "fallback_dim": 4}),   # a full-width fallback
    ((4,), {"fallback": "hashing"}),          # no projection at all
]


@pytest.fixture(params=["lanes", "slots"])
def path(request, monkeypatch):
    """Runs the layer's PyTorch lookup by `_Plan`'s lanes or by
    `_SlotPlan`'s slot table (chosen by the slots per id of a call)."""
    from keras_mixed_dim.backend.torch import dynamic_lookup

    monkeypatch.setattr(dynamic_lookup, "SLOTS_PER_ID", 0 if request.param == "lanes" else 10**9)
    return request.param


def make(dims, **options):
    from tests.layers.test_dynamic_embedding import make as make_layer

    keras.utils.set_random_seed(3)
    return make_layer([4 + 2 * t for t in range(len(dims))], dims, **options)


def batch_of(layer, rng, shape=(24,)):
    """Packed ids of every kind: admitted in each tier, never seen (the
    fallback), a stale tag, slots out of range both ways, padding, a bucket
    out of range."""
    keys = np.arange(1, 40) * (2**33 + 7)
    layer.update(np.repeat(keys[:sum(layer.plan.tier_rows)], 2))
    packed = layer.lookup_ids(rng.choice(keys, shape))
    flat = packed.reshape(-1, 3)
    flat[0, 1] += 1                 # a stale tag: the fallback
    flat[1, 0] = 10**6              # a slot past the last: the fallback
    flat[2, 0] = -5                 # a negative slot: the fallback
    flat[3] = (-1, 0, -1)           # padding: nothing
    flat[4, 2] = layer.plan.fallback_range   # a bucket out of range: nothing
    assert (flat[:, 0] >= 0).sum() > 4
    return packed


def outputs_and_gradients(layer, packed, upstream, weights=None, call=None):
    """The layer's outputs (by `call`, default the layer) and each width
    table's dense gradient of `sum(outputs * upstream)`."""
    for variable in layer.width_tables:
        variable.value.grad = None
    call = call or layer
    outputs = call(packed) if weights is None else call(packed, weights=weights)
    (outputs.float() * upstream).sum().backward()
    return (ops.convert_to_numpy(outputs),
            [ops.convert_to_numpy(v.value.grad) for v in layer.width_tables])


def assert_same(got, want):
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dims,options", LAYOUTS)
def test_outputs_and_gradients_equal_the_portable_path(path, portable, dims, options):
    import torch

    layer = make(dims, **options)
    rng = np.random.default_rng(0)
    packed = batch_of(layer, rng)
    upstream = torch.as_tensor(rng.normal(size=(24, 4)).astype("float32"))
    got = outputs_and_gradients(layer, packed, upstream)
    want = portable(lambda: outputs_and_gradients(layer, packed, upstream))
    assert_same(got, want)
    # every variable's gradient is exercised, and padding reads zeros
    assert all(np.abs(g).sum() > 0 for g in got[1])
    np.testing.assert_array_equal(got[0][3], 0.0)


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_weighted_bags_equal_the_portable_path(path, portable, combiner):
    import torch

    layer = make((4, 2, 1), combiner=combiner)
    rng = np.random.default_rng(1)
    packed = batch_of(layer, rng, shape=(6, 4))
    weights = rng.uniform(0.5, 2.0, (6, 4)).astype("float32")
    upstream = torch.as_tensor(rng.normal(size=(6, 4)).astype("float32"))
    got = outputs_and_gradients(layer, packed, upstream, weights)
    assert got[0].shape == (6, 4)
    assert_same(got, portable(lambda: outputs_and_gradients(layer, packed, upstream, weights)))


def test_mixed_precision_casts_the_outputs_and_equals_the_portable_path(path, portable,
                                                                         mixed_policy):
    import torch

    from tests.layers.test_dynamic_embedding import capacity_for
    from keras_mixed_dim import DynamicEmbedding

    keras.utils.set_random_seed(3)
    layer = DynamicEmbedding(4, capacity_for([4, 6], (4, 2)), tier_dims=(4, 2), min_count=1,
                             rebalance_every=0, fallback_buckets=4, sketch_width=16)
    rng = np.random.default_rng(2)
    packed = batch_of(layer, rng)
    upstream = torch.as_tensor(rng.normal(size=(24, 4)).astype("float32"))
    inputs = keras.Input((3,), dtype="int32")
    model = keras.Model(inputs, layer(inputs))
    # in a model of the mixed policy and called alone, the tables are read
    # as float32 (their variables opt out of Keras's autocast scope)
    for call, tolerance in ((model, 1e-5), (layer, 1e-5)):
        got = outputs_and_gradients(layer, packed, upstream, call=call)
        assert got[0].dtype == np.float16
        assert all(v.dtype == "float32" for v in layer.width_tables)
        assert all(g.dtype == np.float32 for g in got[1])
        want = portable(lambda: outputs_and_gradients(layer, packed, upstream, call=call))
        np.testing.assert_array_equal(got[0], want[0])
        for g, w in zip(got[1], want[1]):
            np.testing.assert_allclose(g, w, rtol=tolerance, atol=tolerance)


class _Owner:
    armed_backward = None


def test_an_armed_sparse_row_optimizer_gets_the_rows_as_sparse_gradients(portable):
    import torch

    from keras_mixed_dim.backend.torch import sparse_rows

    layer = make((4, 2, 1))
    rng = np.random.default_rng(3)
    packed = batch_of(layer, rng)
    upstream = torch.as_tensor(rng.normal(size=(24, 4)).astype("float32"))
    want = portable(lambda: outputs_and_gradients(layer, packed, upstream))
    owner = _Owner()
    for variable in layer.width_tables:
        setattr(variable, sparse_rows.OWNER_ATTRIBUTE, weakref.ref(owner))
        variable.value.grad = None
    loss = (layer(packed) * upstream).sum()
    sparse_rows.arm_row_step(owner, loss).backward()
    for variable, dense in zip(layer.width_tables, want[1]):
        grad = variable.value.grad
        assert grad.is_sparse
        rows, _ = sparse_rows.row_gradient(grad)
        # the rows the batch read (and the projections), not the whole table
        assert rows.numel() < 4 * 24 + 16
        np.testing.assert_allclose(grad.to_dense().numpy(), dense, rtol=1e-5, atol=1e-6)
    # a backward pass it did not arm gets dense gradients
    for variable in layer.width_tables:
        variable.value.grad = None
    (layer(packed) * upstream).sum().backward()
    assert not any(v.value.grad.is_sparse for v in layer.width_tables)


def test_a_diverged_tier_row_gives_the_shared_fallback_no_nan_gradient(path):
    # the narrowest tier's rows share a lane with the QR quotient's: an id
    # reading its row holds it there, and the remainder row of its bucket
    # (read by other ids) must get no 0 * inf from it
    import torch

    layer = make((4, 2, 1))
    rng = np.random.default_rng(4)
    packed = batch_of(layer, rng)
    assert layer.layout.buffer["tier_2_embeddings"] == layer.layout.buffer["fallback_quotient"]
    slot = int(layer.id_map.offsets[2])
    packed[5] = layer.lookup_ids(layer.id_map.keys[slot:slot + 1])[0]
    assert packed[5, 0] == slot and packed[5, 1] > 0
    name = "tier_2_embeddings"
    table = layer.width_tables[layer.layout.buffer[name]]
    values = ops.convert_to_numpy(table).copy()
    values[layer.layout.start[name]] = np.inf
    table.assign(values)
    upstream = torch.as_tensor(rng.normal(size=(24, 4)).astype("float32"))
    outputs, grads = outputs_and_gradients(layer, packed, upstream)
    assert not np.isfinite(outputs[5]).any() and np.isfinite(np.delete(outputs, 5, 0)).all()
    views = layer.part_views(grads)
    for part in ("fallback_quotient", "fallback_remainder", "tier_0_embeddings",
                 "tier_1_embeddings", "tier_2_embeddings", "fallback_projection"):
        assert np.isfinite(views[part]).all(), part


def test_training_with_keras_adam_equals_the_portable_path(path, portable):
    from tests.layers.test_dynamic_embedding import model_of

    layers_ = [make((4, 2, 1)) for _ in range(2)]
    models = [model_of(layer) for layer in layers_]
    models[1].set_weights(models[0].get_weights())
    before = models[0].get_weights()
    rng = np.random.default_rng(5)
    packed = [batch_of(layer, np.random.default_rng(5)) for layer in layers_]
    np.testing.assert_array_equal(packed[0], packed[1])
    y = rng.normal(size=(24, 1)).astype("float32")
    for _ in range(3):
        models[0].train_on_batch(packed[0], y)
        portable(lambda: models[1].train_on_batch(packed[1], y))
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert all(not np.array_equal(a, b) for a, b in zip(models[0].get_weights(), before)
               if a.dtype == np.float32)


def test_under_torch_compile_the_traced_ops_give_the_same_outputs_and_gradients(monkeypatch):
    # torch.compile (`jit_compile=True`) cannot trace the hand-written
    # backward: there the lookup runs its ops with `where` selects and lets
    # autograd differentiate them (a fit with jit_compile=True, ~20 s, was
    # checked by hand to give the losses of the portable path)
    import torch

    layer = make((4, 2, 1))
    rng = np.random.default_rng(6)
    packed = batch_of(layer, rng)
    upstream = torch.as_tensor(rng.normal(size=(24, 4)).astype("float32"))
    want = outputs_and_gradients(layer, packed, upstream)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    got = outputs_and_gradients(layer, packed, upstream)
    assert_same(got, want)


def _poison(layer, part, value):
    table = layer.width_tables[layer.layout.buffer[part]]
    values = ops.convert_to_numpy(table).copy()
    values[layer.layout.start[part]] = value
    table.assign(values)


def _full_width_ids(layer, packed):
    slots, tags = packed[:, 0], packed[:, 1]
    return np.flatnonzero((slots >= 0) & (slots < layer.id_map.offsets[1]) & (tags > 0))


@pytest.mark.parametrize("compiling", [False, True])
def test_a_diverged_projection_or_upstream_leaves_full_width_ids_as_the_portable_path(
        portable, monkeypatch, compiling):
    from keras_mixed_dim.backend.torch import dynamic_lookup

    # (the lanes: the slot table keeps such a projection to its own tier's
    # ids, below)
    monkeypatch.setattr(dynamic_lookup, "SLOTS_PER_ID", 0)
    # a full-width id's projected columns are zeros: times an inf projection
    # (forward) or a NaN upstream (backward) they would be NaN, where the
    # portable path's select gives its piece alone and no projection gradient
    import torch

    layer = make((4, 2, 2))
    rng = np.random.default_rng(7)
    packed = batch_of(layer, rng)
    full = _full_width_ids(layer, packed)
    assert full.size
    upstream = torch.as_tensor(rng.normal(size=(24, 4)).astype("float32"))
    upstream[int(full[0])] = float("nan")
    _poison(layer, "tier_1_projection", np.inf)
    want = portable(lambda: outputs_and_gradients(layer, packed, upstream))
    if compiling:
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    got = outputs_and_gradients(layer, packed, upstream)
    assert np.isfinite(got[0][full]).all()
    np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(want[0]))
    views, wanted = layer.part_views(got[1]), layer.part_views(want[1])
    for part in ("tier_1_projection", "tier_2_projection", "fallback_projection"):
        assert np.isfinite(views[part]).all(), part
    for part in views:   # the NaN upstream reaches its own id's row alone
        np.testing.assert_array_equal(np.isnan(views[part]), np.isnan(wanted[part]), part)


def test_under_torch_compile_a_diverged_tier_row_gives_the_remainder_no_nan_gradient(
        monkeypatch):
    # the compile path differentiates its forward by autograd: the quotient's
    # lane (here the only tier's rows) must be selected before the product
    import torch

    layer = make((2,))
    packed = batch_of(layer, np.random.default_rng(0))
    assert layer.layout.buffer["tier_0_embeddings"] == layer.layout.buffer["fallback_quotient"]
    _poison(layer, "tier_0_embeddings", np.inf)
    upstream = torch.as_tensor(
        np.random.default_rng(8).normal(size=(24, layer.output_dim)).astype("float32"))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    views = layer.part_views(outputs_and_gradients(layer, packed, upstream)[1])
    for part in ("fallback_quotient", "fallback_remainder"):
        assert np.isfinite(views[part]).all(), part


# -- the slot table (`_SlotPlan`) ---------------------------------------------


def test_the_slot_table_serves_calls_with_few_slots_per_id_and_no_sparse_owner():
    import torch

    from keras_mixed_dim.backend.torch import dynamic_lookup

    layer = make((4, 2, 1))
    layer.build((None, 3))
    slots, free = layer.id_map.num_slots, (None,) * len(layer.width_tables)
    per_id, cpu = dynamic_lookup.SLOTS_PER_ID, torch.device("cpu")
    assert isinstance(dynamic_lookup._slot_plan_of(layer, free, -(-slots // per_id), cpu),
                      dynamic_lookup._SlotPlan)
    # more slots than ids can use: the lanes, whose cost grows with the ids
    assert dynamic_lookup._slot_plan_of(layer, free, -(-slots // per_id) - 1, cpu) is None
    # a table whose SparseRowOptimizer may take sparse gradients: the lanes
    owner = _Owner()
    owners = (None, weakref.ref(owner), None)
    assert dynamic_lookup._slot_plan_of(layer, owners, 10**6, cpu) is None
    # another device: the lanes (no wait for the device's `nonzero`)
    assert dynamic_lookup._slot_plan_of(layer, free, 10**6, torch.device("meta")) is None


def _tier_readers(layer, packed, t):
    slots, tags = packed[:, 0], packed[:, 1]
    offsets = layer.id_map.offsets
    stored = ops.convert_to_numpy(layer.slot_tags)[np.clip(slots, 0, offsets[-1] - 1)]
    return (slots >= offsets[t]) & (slots < offsets[t + 1]) & (tags > 0) & (stored == tags)


def test_under_the_slot_table_a_diverged_projection_reaches_its_own_tiers_ids_alone(
        portable, monkeypatch):
    # each slot's output is its row through its own tier's projection: an
    # inf there reaches that tier's ids, where the lanes' product of every
    # projected piece with every projection reaches all projected ids
    import torch

    from keras_mixed_dim.backend.torch import dynamic_lookup

    monkeypatch.setattr(dynamic_lookup, "SLOTS_PER_ID", 10**9)
    layer = make((4, 2, 2))
    rng = np.random.default_rng(7)
    packed = batch_of(layer, rng)
    full = _full_width_ids(layer, packed)
    readers = _tier_readers(layer, packed, 1)
    assert readers.sum() >= 2 and full.size
    upstream = torch.as_tensor(rng.normal(size=(24, 4)).astype("float32"))
    upstream[int(full[0])] = float("nan")
    _poison(layer, "tier_1_projection", np.inf)
    want = portable(lambda: outputs_and_gradients(layer, packed, upstream))
    got = outputs_and_gradients(layer, packed, upstream)
    np.testing.assert_array_equal(~np.isfinite(got[0]).all(-1), readers)
    finite = np.isfinite(want[0]).all(-1)
    assert finite.sum() >= 4
    np.testing.assert_allclose(got[0][finite], want[0][finite], rtol=1e-5, atol=1e-6)
    views, wanted = layer.part_views(got[1]), layer.part_views(want[1])
    for part in views:
        # a row's gradient is non-finite where the portable path's is (rows
        # read through the diverged projection, the NaN upstream's own row),
        # zero where no id read it, and equal elsewhere
        np.testing.assert_array_equal(np.isfinite(views[part]), np.isfinite(wanted[part]),
                                      part)
        both = np.isfinite(views[part]) & np.isfinite(wanted[part])
        np.testing.assert_allclose(views[part][both], wanted[part][both], rtol=1e-5, atol=1e-6)
    assert not np.isfinite(views["tier_1_embeddings"]).all()


def test_a_diverged_row_no_id_reads_gives_no_gradient_nan(path, portable):
    # the slot table projects every slot's row: one that no id of the batch
    # reads must give its projection no 0 * inf gradient
    import torch

    layer = make((4, 2, 1))
    rng = np.random.default_rng(9)
    packed = batch_of(layer, rng)
    offsets = layer.id_map.offsets
    read = set(packed[_tier_readers(layer, packed, 1), 0].tolist())
    unread = [s for s in range(int(offsets[1]), int(offsets[2])) if s not in read]
    assert unread and read
    name = "tier_1_embeddings"
    table = layer.width_tables[layer.layout.buffer[name]]
    values = ops.convert_to_numpy(table).copy()
    values[layer.layout.start[name] + unread[0] - int(offsets[1])] = np.inf
    table.assign(values)
    upstream = torch.as_tensor(rng.normal(size=(24, 4)).astype("float32"))
    got = outputs_and_gradients(layer, packed, upstream)
    want = portable(lambda: outputs_and_gradients(layer, packed, upstream))
    assert np.isfinite(got[0]).all() and all(np.isfinite(g).all() for g in got[1])
    assert_same(got, want)


def test_a_diverged_fallback_factor_read_by_admitted_ids_alone_gives_no_gradient_nan(
        path, portable):
    # every id gathers its bucket's quotient and remainder rows: an admitted
    # id's diverged quotient row times its zero fallback gradient must not
    # reach the remainder row or the fallback's projection
    import torch

    layer = make((4, 2, 1))
    rng = np.random.default_rng(10)
    packed = batch_of(layer, rng)
    remainder = layer.plan.fallback_tables[1]
    admitted = np.zeros(24, bool)
    for t in range(layer.num_tiers):
        admitted |= _tier_readers(layer, packed, t)
    buckets = packed[:, 2]
    quotients = buckets // remainder
    falling = ~admitted & (buckets >= 0) & (buckets < layer.plan.fallback_range)
    # a quotient row of admitted ids' buckets alone
    spare = sorted(set(quotients[admitted].tolist()) - set(quotients[falling].tolist()))
    if not spare:
        quotient = int(quotients[admitted][0])
        packed[falling & (quotients == quotient), 2] = (quotient + 1) % 2 * remainder
        buckets, quotients = packed[:, 2], packed[:, 2] // remainder
        falling = ~admitted & (buckets >= 0) & (buckets < layer.plan.fallback_range)
        spare = sorted(set(quotients[admitted].tolist()) - set(quotients[falling].tolist()))
    assert spare and falling.sum() >= 2
    name = "fallback_quotient"
    table = layer.width_tables[layer.layout.buffer[name]]
    values = ops.convert_to_numpy(table).copy()
    values[layer.layout.start[name] + spare[0]] = np.inf
    table.assign(values)
    upstream = torch.as_tensor(rng.normal(size=(24, 4)).astype("float32"))
    got = outputs_and_gradients(layer, packed, upstream)
    want = portable(lambda: outputs_and_gradients(layer, packed, upstream))
    views = layer.part_views(got[1])
    for part in ("fallback_remainder", "fallback_projection", "fallback_quotient"):
        assert np.isfinite(views[part]).all(), part
    assert np.isfinite(got[0]).all()
    assert_same(got, want)


def test_rows_written_between_two_calls_leave_the_first_calls_gradient_as_read(
        path, portable):
    # a layer called twice in one step, with row writes before the second
    # call: the first call's backward pass reads the rows as it read them
    import torch

    from tests.layers.test_dynamic_embedding import random_writes

    layer = make((4, 2, 1), max_writes=4)
    rng = np.random.default_rng(11)
    packed = batch_of(layer, rng)
    writes = random_writes(layer, rng, [2, 3, 2])
    upstream = torch.as_tensor(rng.normal(size=(2, 24, 4)).astype("float32"))
    state = [*layer.width_tables, layer.slot_tags]
    before = [ops.convert_to_numpy(v).copy() for v in state]

    def run():
        for variable in layer.width_tables:
            variable.value.grad = None
        first = layer(packed)
        layer._apply_writes(writes)
        second = layer(packed)
        ((first * upstream[0]).sum() + (second * upstream[1]).sum()).backward()
        result = ([ops.convert_to_numpy(first), ops.convert_to_numpy(second)],
                  [ops.convert_to_numpy(v.value.grad) for v in layer.width_tables])
        for variable, value in zip(state, before):
            variable.assign(value)
        return result

    got = run()
    want = portable(run)
    assert not np.allclose(got[0][0], got[0][1])
    for g, w in zip(got[0], want[0]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kept", ["admitted", "fallback"])
def test_a_batch_without_fallback_readers_or_without_admitted_ids(path, portable, kept):
    # the slot table computes the fallback for its readers alone, and
    # projects the rows some admitted id read: none of either is a batch too
    import torch

    layer = make((4, 2, 1))
    rng = np.random.default_rng(12)
    packed = batch_of(layer, rng)
    admitted = np.zeros(24, bool)
    for t in range(layer.num_tiers):
        admitted |= _tier_readers(layer, packed, t)
    assert 0 < admitted.sum() < 24
    # padding (reads nothing) in place of the ids of the other kind
    packed[~admitted if kept == "admitted" else admitted] = (-1, 0, -1)
    upstream = torch.as_tensor(rng.normal(size=(24, 4)).astype("float32"))
    got = outputs_and_gradients(layer, packed, upstream)
    assert_same(got, portable(lambda: outputs_and_gradients(layer, packed, upstream)))
    assert np.abs(got[0]).sum() > 0


def test_the_raw_torch_reading_of_packed_ids_equals_the_portable_one(portable):
    # `unpack` (the call's prelude in raw torch) against the `keras.ops`
    # prelude: stale tags, slots out of range, padding, a bucket out of
    # range, and int64 ids past int32 (wrapped by both, as `ops.cast`)
    import torch

    from keras_mixed_dim.backend.torch import dynamic_lookup

    layer = make((4, 2, 1))
    packed = batch_of(layer, np.random.default_rng(13), shape=(4, 6)).astype(np.int64)
    flat = packed.reshape(-1, 3)
    tags = ops.convert_to_numpy(layer.slot_tags.value)
    slots = np.clip(flat[:, 0], 0, tags.size - 1)
    first, second = np.flatnonzero((flat[:, 0] == slots) & (tags[slots] == flat[:, 1])
                                   & (flat[:, 1] > 0))[:2]
    flat[first] += 2**32             # wraps to the same id: admitted
    flat[second, 0] += 2**31         # wraps to a negative slot: the fallback
    seen = []

    def record(safe, admitted, buckets):
        seen.append([ops.convert_to_numpy(x).astype(np.int64)
                     for x in (safe, admitted, buckets)])
        return ops.zeros(tuple(safe.shape) + (4,)), ops.ones(tuple(safe.shape), "bool")

    for run in (lambda f: f(), portable):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(layer, "_vectors", record)
            run(lambda: layer(torch.as_tensor(packed)))
    got, want = seen
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    admitted = got[1]
    assert admitted.reshape(-1)[first] and not admitted.reshape(-1)[second]
    assert not admitted.all()
    assert hasattr(dynamic_lookup, "unpack")


def _model_outputs_and_gradients(layer, packed, writes):
    """Outputs and table gradients of the layer inside a functional model's
    training call (with the `writes` input, as `dynamic_batches` feeds it)."""
    import torch

    ids = keras.Input((3,), dtype="int32")
    write_input = layer.writes_input()
    model = keras.Model([ids, write_input], layer(ids, writes=write_input))
    for variable in layer.width_tables:
        variable.value.grad = None
    calls = []
    call = layer.call
    layer.call = lambda *args, **kwargs: calls.append(1) or call(*args, **kwargs)
    outputs = model([torch.as_tensor(packed), torch.as_tensor(writes)], training=True)
    # the layer's call ran once (not again by `__call__`)
    assert len(calls) == 1
    upstream = torch.as_tensor(np.random.default_rng(5).normal(size=tuple(outputs.shape)))
    (outputs.float() * upstream.float()).sum().backward()
    return (ops.convert_to_numpy(outputs),
            [ops.convert_to_numpy(v.value.grad) for v in layer.width_tables])


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_inside_a_model_the_call_skips_keras_call_and_equals_it(monkeypatch, policy):
    # `direct_call` (the layer's call without `Layer.__call__`) serves the
    # model's eager call, `training` and an autocast scope included, and
    # gives what `__call__` gives, outputs and gradients
    from keras_mixed_dim.backend.torch import dynamic_lookup

    keras.mixed_precision.set_global_policy(policy)
    try:
        results, served = [], []
        for direct in (True, False):
            layer = make((4, 2, 1))
            packed = batch_of(layer, np.random.default_rng(6))
            writes = np.asarray(layer.no_writes())
            original = dynamic_lookup.direct_call

            def spy(*args, direct=direct, original=original):
                outputs = original(*args) if direct else None
                served.append(outputs is not None)
                return outputs

            with monkeypatch.context() as patch:
                patch.setattr(dynamic_lookup, "direct_call", spy)
                results.append(_model_outputs_and_gradients(layer, packed, writes))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # the symbolic call that built the model went through `__call__`, the
    # training call did not
    assert served[:2] == [False, True] and not any(served[2:])
    (got, got_grads), (want, want_grads) = results
    assert got.dtype == want.dtype == (np.float16 if policy != "float32" else np.float32)
    np.testing.assert_array_equal(got, want)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_array_equal(g, w)
    assert np.abs(got).sum() > 0


def test_direct_call_leaves_to_keras_what_it_does_not_serve():
    # the outermost call (Keras opens the call context and clears losses),
    # an input with a mask (Keras warns), an argument `call` does not take,
    # bag weights that are not a tensor: `__call__` runs them
    import torch
    from keras.src.backend.common import global_state
    from keras.src.backend.common.stateless_scope import StatelessScope
    from keras.src.backend.common.symbolic_scope import SymbolicScope
    from keras.src.layers.layer import CallContext

    from keras_mixed_dim.backend.torch import dynamic_lookup

    layer = make((4, 2, 1))
    ids = torch.as_tensor(batch_of(layer, np.random.default_rng(7)))
    assert dynamic_lookup.direct_call(layer, (ids,), {}) is None
    global_state.set_global_attribute("current_call_ctx", CallContext(entry_layer=layer))
    try:
        served = dynamic_lookup.direct_call(layer, (ids,), {"training": True})
        np.testing.assert_array_equal(ops.convert_to_numpy(served),
                                      ops.convert_to_numpy(layer.call(ids)))
        masked = ids.clone()
        masked._keras_mask = torch.ones(ids.shape[:-1], dtype=torch.bool)
        assert dynamic_lookup.direct_call(layer, (masked,), {}) is None
        assert dynamic_lookup.direct_call(layer, (ids,), {"mask": None}) is None
        assert dynamic_lookup.direct_call(layer, (ids,), {"weights": np.ones(24)}) is None
        assert dynamic_lookup.direct_call(layer, (ids, ids), {}) is None
        assert dynamic_lookup.direct_call(make((4, 2, 1)), (ids,), {}) is None   # unbuilt
        with StatelessScope():
            assert dynamic_lookup.direct_call(layer, (ids,), {}) is None
        with SymbolicScope():
            assert dynamic_lookup.direct_call(layer, (ids,), {}) is None
        for name, value in [("_remat_mode", object()),
                            ("activity_regularizer", keras.regularizers.L2())]:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(layer, name, value)
                assert dynamic_lookup.direct_call(layer, (ids,), {}) is None
        handle = layer.register_forward_hook(lambda *args: None)
        assert dynamic_lookup.direct_call(layer, (ids,), {}) is None
        handle.remove()
        global_state.set_global_attribute("distribution", object())
        assert dynamic_lookup.direct_call(layer, (ids,), {}) is None
        # a Keras without the private state read here: `__call__` runs it
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(dynamic_lookup, "_keras_scopes", None)
            assert dynamic_lookup.direct_call(layer, (ids,), {}) is None
        with pytest.MonkeyPatch.context() as patch:
            patch.delattr(type(layer), "_call_context_args", raising=False)
            patch.setattr(layer, "_call_context_args", None)
            assert dynamic_lookup.direct_call(layer, (ids,), {}) is None
    finally:
        global_state.set_global_attribute("distribution", None)
        global_state.set_global_attribute("current_call_ctx", None)
    assert layer(ids).shape == (24, 4)


def test_a_mixed_precision_models_writes_reset_the_optimizer_slots_as_keras_call(monkeypatch):
    # the model's autocast scope casts what the optimizer's slots read (they
    # do not opt out, the tables do): `__call__` clears it for the layer, and
    # so does `direct_call`; the torch ops of the row writes (tensors off
    # the CPU) reset the written rows' Adam moments either way
    import torch
    from keras.src.backend.common.variables import get_autocast_scope

    from keras_mixed_dim.backend.torch import dynamic_lookup
    from keras_mixed_dim.backend.torch import row_writes
    from keras_mixed_dim.layers.slots import slot_variables
    from tests.layers.test_dynamic_embedding import fill_slots
    from tests.layers.test_dynamic_embedding import make as make_layer
    from tests.layers.test_dynamic_embedding import random_writes

    monkeypatch.setattr(row_writes, "NUMPY_WRITES", False)
    original, results = dynamic_lookup.direct_call, []
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for direct in (True, False):
            keras.utils.set_random_seed(0)
            layer = make_layer([4, 5, 4], (4, 2, 1), max_writes=4)
            ids, write_input = keras.Input((3,), dtype="int32"), layer.writes_input()
            model = keras.Model([ids, write_input], layer(ids, writes=write_input))
            model.compile(keras.optimizers.Adam(0.05), "mse")
            layer.attach_optimizer(model.optimizer)
            fill_slots(model)
            writes = random_writes(layer, np.random.default_rng(0), [2, 3, 2])
            served, scopes, call = [], [], layer.call
            layer.call = lambda *args, call=call, **kwargs: scopes.append(
                getattr(get_autocast_scope(), "dtype", None)) or call(*args, **kwargs)

            def spy(*args, direct=direct):
                outputs = original(*args) if direct else None
                served.append(outputs is not None)
                return outputs

            monkeypatch.setattr(dynamic_lookup, "direct_call", spy)
            model([torch.as_tensor(layer.lookup_ids(np.arange(1, 5))),
                   torch.as_tensor(writes)], training=True)
            assert served == [direct]
            # the call sees no autocast dtype, as under `__call__`
            assert scopes == [None]
            results.append([ops.convert_to_numpy(slot).copy() for v in layer.width_tables
                            for slot in slot_variables(model.optimizer, v)])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    got, want = results
    # the written rows' moments start over (zeros), as through `__call__`
    assert sum(int((s == 0).all(axis=-1).sum()) for s in want) >= 7
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_direct_call_leaves_backward_hooks_and_a_compiled_module_to_torch():
    # torch's `Module.__call__` runs a module's backward hooks (its own and
    # global ones) and `Module.compile`'s compiled call: the direct call
    # would skip them
    import torch
    from keras.src.backend.common import global_state
    from keras.src.layers.layer import CallContext

    from keras_mixed_dim.backend.torch import dynamic_lookup

    layer = make((4, 2, 1))
    ids = torch.as_tensor(batch_of(layer, np.random.default_rng(7)))
    global_state.set_global_attribute("current_call_ctx", CallContext(entry_layer=layer))
    try:
        assert dynamic_lookup.direct_call(layer, (ids,), {}) is not None
        for register in (layer.register_full_backward_hook,
                         layer.register_full_backward_pre_hook,
                         torch.nn.modules.module.register_module_full_backward_hook,
                         torch.nn.modules.module.register_module_full_backward_pre_hook):
            handle = register(lambda *args: None)
            try:
                assert dynamic_lookup.direct_call(layer, (ids,), {}) is None, register
            finally:
                handle.remove()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(layer, "_compiled_call_impl", lambda *args, **kwargs: None)
            assert dynamic_lookup.direct_call(layer, (ids,), {}) is None
        assert dynamic_lookup.direct_call(layer, (ids,), {}) is not None
    finally:
        global_state.set_global_attribute("current_call_ctx", None)
