"""DynamicEmbedding on the current backend: outputs against a numpy
reference, eviction and tier moves with their optimizer slots, training with
`fit`, and an exact resume from a `.keras` file."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim import DynamicEmbedding
from keras_mixed_dim import IdSafeModel
from keras_mixed_dim import SparseRowOptimizer
from keras_mixed_dim.dynamic.id_map import key_pieces
from keras_mixed_dim.dynamic.plan import DynamicPlan
from keras_mixed_dim.dynamic.plan import FLOAT_BYTES
from keras_mixed_dim.dynamic.plan import TAG_BYTES
from keras_mixed_dim.dynamic.id_map import SLOT_BYTES
from keras_mixed_dim.frequency.rerank import slot_variables
from keras_mixed_dim.layers import hashes


def capacity_for(rows, dims, output_dim=4, slots=2, fallback=4, sketch=16):
    """The budget that gives exactly `rows` per tier of widths `dims`."""
    fixed = DynamicPlan(output_dim, (0,) * len(dims), tuple(dims), fallback, dims[-1],
                        sketch, 2, slots, 0).bytes
    per_row = [d * FLOAT_BYTES * (1 + slots) + SLOT_BYTES + TAG_BYTES for d in dims]
    return fixed + len(dims) * max(r * b for r, b in zip(rows, per_row))


def make(rows, dims, **kwargs):
    kwargs.setdefault("min_count", 1)
    kwargs.setdefault("rebalance_every", 0)
    kwargs.setdefault("fallback_buckets", 4)
    layer = DynamicEmbedding(4, capacity_for(rows, dims), tier_dims=dims,
                             sketch_width=16, **kwargs)
    assert all(r >= want for r, want in zip(layer.plan.tier_rows, rows))
    return layer


def model_of(layer):
    inputs = keras.Input((3,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    return model


def np_weights(layer):
    tables = [ops.convert_to_numpy(t).astype(np.float64) for t in layer.tables]
    projections = [None if p is None else ops.convert_to_numpy(p).astype(np.float64)
                   for p in layer.projections]
    return tables, projections


def reference(layer, packed, keys):
    """Outputs computed from the weights in numpy, independently of the layer."""
    tables, projections = np_weights(layer)
    fallback = ops.convert_to_numpy(layer.fallback).astype(np.float64)
    fallback_projection = ops.convert_to_numpy(layer.fallback_projection).astype(np.float64)
    tags = ops.convert_to_numpy(layer.slot_tags)
    if layer.plan.fallback == "qr":
        # QREmbedding's "mult": quotient row b // r times remainder row b % r
        quotient_rows, r = layer.plan.fallback_tables
        remainder = ops.convert_to_numpy(layer.fallback_remainder).astype(np.float64)
        buckets = hashes.buckets_numpy(key_pieces(keys), layer._hash, quotient_rows * r)
        result = (fallback[buckets // r] * remainder[buckets % r]) @ fallback_projection
    else:
        buckets = hashes.buckets_numpy(key_pieces(keys), layer._hash,
                                       layer.plan.fallback_buckets)
        result = fallback[buckets] @ fallback_projection
    offsets = layer.id_map.offsets
    for i, (slot, tag) in enumerate(packed[:, :2]):
        if 0 <= slot < offsets[-1] and tag > 0 and tags[slot] == tag:
            t = int(np.searchsorted(offsets[1:], slot, side="right"))
            row = tables[t][slot - offsets[t]]
            result[i] = row if projections[t] is None else row @ projections[t]
    return result


@pytest.mark.parametrize("fallback", ["hashing", "qr"])
def test_outputs_match_a_numpy_reference_and_stale_tags_read_the_fallback(fallback):
    layer = make([2, 3], (4, 2), fallback=fallback)
    keys = np.array([2**40 + 3, -3, 2**31, 77], np.int64)
    packed = layer.update(keys[:3])
    assert packed.dtype == np.int32 and packed.shape == (3, 3)
    everything = layer.lookup_ids(keys)
    assert everything[3, 0] == -1  # 77 never seen
    stale = everything.copy()
    stale[0, 1] += 1             # a tag the slot no longer has
    stale[1, 0] = 10**6          # a slot out of range
    for batch in (everything, stale):
        got = ops.convert_to_numpy(layer(batch)).astype(np.float64)
        np.testing.assert_allclose(got, reference(layer, batch, keys), rtol=1e-5, atol=1e-6)
    fallback = layer.fallback_outputs(keys)
    got = ops.convert_to_numpy(layer(stale))
    np.testing.assert_allclose(got[[0, 1, 3]], fallback[[0, 1, 3]], rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[0], ops.convert_to_numpy(layer(everything))[0])


def slots_of(model, layer, t):
    """Tier `t`'s rows of each optimizer slot of the variable that holds them."""
    name = f"tier_{t}_embeddings"
    start, (rows, _) = layer.layout.start[name], layer.layout.shape[name]
    buffer = layer.width_tables[layer.layout.buffer[name]]
    return [ops.convert_to_numpy(s)[start:start + rows]
            for s in slot_variables(model.optimizer, buffer)]


def fill_slots(model, seed=0):
    """Builds the optimizer and gives every slot nonzero values (what a few
    steps would leave), without compiling a train step."""
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for variable in getattr(layer, "width_tables", []):
            for slot in slot_variables(model.optimizer, variable):
                slot.assign(rng.uniform(0.1, 1.0, slot.shape).astype("float32"))


def test_eviction_gives_a_fresh_row_with_fresh_slots_never_the_evicted_ids():
    layer = make([2], (4,), eviction="lfu")
    model = model_of(layer)
    layer.update([10, 10, 10, 20], optimizer=model.optimizer)
    fill_slots(model)
    old_rows = ops.convert_to_numpy(layer.tables[0])
    old_slots = slots_of(model, layer, 0)
    assert len(old_slots) == 2 and all(np.abs(s).sum() > 0 for s in old_slots)
    victim = int(layer.id_map.find([20])[0])
    stale = layer.lookup_ids([20])
    # a newcomer whose fallback bucket is not 20's, to tell the two apart
    new = next(k for k in range(30, 99) if not np.allclose(
        layer.fallback_outputs([k])[0], layer.fallback_outputs([20])[0]))
    layer.update([new, new], optimizer=model.optimizer)   # counted 2 > 20's 1
    assert layer.id_map.find([20])[0] == -1 and layer.id_map.find([new])[0] == victim
    rows = ops.convert_to_numpy(layer.tables[0])
    # the new id's row is its own fallback vector (tier 0 has no projection)
    np.testing.assert_allclose(rows[victim], layer.fallback_outputs([new])[0], rtol=1e-6)
    assert not np.allclose(rows[victim], old_rows[victim])
    keep = 1 - victim
    np.testing.assert_array_equal(rows[keep], old_rows[keep])
    for before, after in zip(old_slots, slots_of(model, layer, 0)):
        assert not after[victim].any()
        np.testing.assert_array_equal(after[keep], before[keep])
    # a batch mapped before the eviction reads 20's fallback, not the new row
    got = ops.convert_to_numpy(layer(stale))[0]
    np.testing.assert_allclose(got, layer.fallback_outputs([20])[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, rows[victim])


def test_promotion_and_demotion_move_rows_by_least_squares_and_reset_their_slots():
    layer = make([1, 2], (4, 2), rebalance_every=2, decay=1.0)
    model = model_of(layer)
    layer.update([1, 1, 1, 2], optimizer=model.optimizer)   # new ids: narrow rows
    fill_slots(model)
    slot = {k: int(layer.id_map.find([k])[0]) for k in (1, 2)}
    tier = layer.id_map.tier_of
    assert tier[slot[1]] == 1 and tier[slot[2]] == 1
    keys = np.array([1, 2], np.int64)
    before = ops.convert_to_numpy(layer(layer.lookup_ids(keys))).astype(np.float64)
    old_slots = [slots_of(model, layer, t) for t in range(layer.num_tiers)]
    layer.update([3], optimizer=model.optimizer)   # step 2: rebalance, 1 -> tier 0
    moved = {k: int(layer.id_map.find([k])[0]) for k in (1, 2)}
    assert tier[moved[1]] == 0 and moved[2] == slot[2]
    after = ops.convert_to_numpy(layer(layer.lookup_ids(keys))).astype(np.float64)
    # into a full-width tier the output is kept exactly; the stayer is untouched
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    new_slots = [slots_of(model, layer, t) for t in range(layer.num_tiers)]
    for s in new_slots[0]:
        assert not s[moved[1]].any()
    for b, a in zip(old_slots[1], new_slots[1]):
        np.testing.assert_array_equal(a[slot[2] - 1], b[slot[2] - 1])
    # demotion: make 2 and 3 outnumber 1; 1 leaves tier 0 by least squares
    table0 = ops.convert_to_numpy(layer.tables[0]).astype(np.float64)
    layer.update([2] * 5 + [3] * 5, optimizer=model.optimizer)
    layer.update([2] * 5, optimizer=model.optimizer)         # step 4: rebalance
    demoted = int(layer.id_map.find([1])[0])
    assert tier[demoted] == 1
    _, projections = np_weights(layer)
    expected = table0[moved[1]] @ np.linalg.pinv(projections[1]) @ projections[1]
    got = ops.convert_to_numpy(layer(layer.lookup_ids([1])))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    for s in slots_of(model, layer, 1):
        assert not s[demoted - 1].any()


def run_stream(model, layer, batches, targets):
    for ids, y in zip(batches, targets):
        model.fit(layer.update(ids, optimizer=model.optimizer), y, batch_size=16,
                  shuffle=False, verbose=0)


def test_fit_trains_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    rng = np.random.default_rng(0)
    batches = [(rng.zipf(1.4, 16) - 1) * (2**33) - 1 for _ in range(4)]
    targets = [rng.normal(size=(16, 1)).astype("float32") for _ in range(4)]
    probe, y = np.concatenate(batches), np.concatenate(targets)
    keras.utils.set_random_seed(1)
    layer = make([3, 6], (4, 2), min_count=2, rebalance_every=2, decay=0.9)
    model = model_of(layer)
    start = np.mean((model.predict(layer.lookup_ids(probe), verbose=0) - y) ** 2)
    run_stream(model, layer, batches[:2], targets[:2])
    model.save(tmp_path / "half.keras")
    run_stream(model, layer, batches[2:], targets[2:])   # uninterrupted
    expected = model.predict(layer.lookup_ids(probe), verbose=0)
    assert np.mean((expected - y) ** 2) < start and layer.id_map.size > 0

    model = keras.saving.load_model(tmp_path / "half.keras")   # resumed
    layer = model.layers[1]
    run_stream(model, layer, batches[2:], targets[2:])
    np.testing.assert_array_equal(model.predict(layer.lookup_ids(probe), verbose=0), expected)
    assert layer.measured_bytes(model.optimizer) <= layer.capacity_bytes


def test_more_optimizer_slots_than_planned_are_refused():
    layer = make([2], (4,), optimizer_slots=0)
    model = model_of(layer)
    model.fit(layer.update([1, 2]), np.ones((2, 1)), verbose=0)
    with pytest.raises(RuntimeError, match="optimizer_slots=0"):
        layer.update([1], optimizer=model.optimizer)


def test_bad_settings_name_the_value():
    with pytest.raises(ValueError, match="capacity_bytes`=1000"):
        DynamicEmbedding(16, 1000)
    with pytest.raises(ValueError, match="min_count=0"):
        DynamicEmbedding(16, 100_000, min_count=0)
    with pytest.raises(ValueError, match="eviction='fifo'"):
        DynamicEmbedding(16, 100_000, eviction="fifo")


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_bags_follow_the_shared_weighted_combiners(combiner):
    layer = make([2, 3], (4, 2), combiner=combiner, bag_size=3)
    bags = [[2**40, -3, 7], [7], [-(2**63), 2**40]]
    packed = layer.update(bags)          # ragged: padded with a mask
    assert packed.shape == (3, 3, 3) and (packed[1, 1:] == (-1, 0, -1)).all()
    weights = np.array([[1.0, 2.0, -1.0], [0.5, 9.0, 9.0], [3.0, 0.0, 9.0]], np.float32)
    got = ops.convert_to_numpy(layer(packed, weights=weights))
    assert got.shape == (3, 4)
    keys = np.array([[2**40, -3, 7], [7, 0, 0], [-(2**63), 2**40, 0]], np.int64)
    mask = packed[..., 2] >= 0
    vectors = reference(layer, packed.reshape(-1, 3), keys.ravel()).reshape(3, 3, 4)
    # tf.nn.safe_embedding_lookup_sparse's weighting, written out
    w = np.where(mask, weights, 0.0)
    if combiner != "sum":
        w = np.where(w > 0, w, 0.0)
    total = {"sum": np.ones(3), "mean": w.sum(1),
             "sqrtn": np.sqrt((w**2).sum(1))}[combiner]
    expected = (w[..., None] * vectors).sum(1) / np.where(total > 0, total, 1.0)[:, None]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_ragged_bags_need_a_fixed_bag_size():
    # padded to each batch's longest bag, every batch would have its own
    # shape and the compiled step would retrace
    layer = make([2, 3], (4, 2), combiner="sum")
    with pytest.raises(ValueError, match=r"ragged bags \(lengths 1 to 3\) but has "
                                         r"bag_size=None"):
        layer.update([[2**40, -3, 7], [7]])
    assert layer.update([[5, 6], [7, 8]]).shape == (2, 2, 3)   # not ragged
    layer = make([2, 3], (4, 2), combiner="sum", bag_size=2)
    packed = layer.prepare([[2**40, -3, 7], [7]])[0]
    assert packed.shape == (2, 2, 3) and (packed[1, 1] == (-1, 0, -1)).all()


def test_a_qr_fallback_tells_apart_more_keys_than_it_has_rows():
    layer = DynamicEmbedding(4, capacity_for([2, 3], (4, 2), fallback=8), tier_dims=(4, 2),
                             fallback="qr", fallback_buckets=8, sketch_width=16,
                             min_count=1)
    assert layer.plan.fallback_tables == (4, 4) and layer.plan.fallback_range == 16
    keys = np.arange(200, dtype=np.int64) * 7919 - 10**12
    vectors = ops.convert_to_numpy(layer(layer.lookup_ids(keys)))   # none admitted
    assert [tuple(w.shape) for w in (layer.fallback, layer.fallback_remainder)] == [
        (4, 2), (4, 2)]
    buckets = layer.fallback_buckets(keys)
    assert buckets.min() >= 0 and np.unique(buckets).size > 8   # more than its rows
    assert np.unique(vectors.round(6), axis=0).shape[0] == np.unique(buckets).size
    bad = layer.lookup_ids(keys[:2])
    bad[:, 2] = (16, -1)      # buckets out of range read zeros, not a row
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(bad)), 0.0)
    with pytest.raises(ValueError, match="fallback_buckets` >= 2"):
        make([2, 3], (4, 2), fallback="qr", fallback_buckets=1)
    with pytest.raises(ValueError, match="fallback='cuckoo'"):
        make([2, 3], (4, 2), fallback="cuckoo")
    with pytest.raises(ValueError, match="not both"):
        make([2, 3], (4, 2), fallback_share=0.5)
    config = layer.get_config()
    assert config["fallback"] == "qr"
    assert DynamicEmbedding.from_config(config).plan == layer.plan


def test_a_config_saved_before_the_fallback_option_loads_with_the_hashed_fallback():
    layer = DynamicEmbedding(8, 40_000, fallback="hashing")
    config = layer.get_config()
    del config["fallback"]
    loaded = DynamicEmbedding.from_config(config)
    assert loaded.plan == layer.plan
    assert DynamicEmbedding.from_config(DynamicEmbedding(8, 40_000).get_config()).plan.fallback == "qr"


def test_in_step_writes_change_only_the_rows_they_name():
    # the write block skips a tier with no entry and reads a source tier only
    # when a row moves from it; checked against numpy, tier by tier
    layer = make([2, 3], (4, 2))
    model = model_of(layer)
    layer.attach_optimizer(model.optimizer)
    fill_slots(model)
    offsets = layer.id_map.offsets
    tables, projections = np_weights(layer)
    slots = [slots_of(model, layer, t) for t in range(layer.num_tiers)]
    tags = ops.convert_to_numpy(layer.slot_tags)

    # nothing named: nothing changes
    layer._apply_writes(layer.no_writes())
    for t, table in enumerate(layer.tables):
        np.testing.assert_array_equal(ops.convert_to_numpy(table), tables[t].astype("float32"))

    # tier 1 only: an admission (from key 77's fallback) and a move from tier 0
    key_bucket = int(layer.fallback_buckets([77])[0])
    admit, move, source = int(offsets[1]), int(offsets[1]) + 2, int(offsets[0]) + 1
    writes = layer.no_writes()
    writes[0, 1, :2] = [[admit, -1, key_bucket, 5], [move, source, 0, 6]]
    writes[0, 1, 2:] = writes[0, 1, 0]   # padding repeats the first entry
    layer._apply_writes(writes)

    pinv = np.linalg.pinv(projections[1])
    after = [ops.convert_to_numpy(t) for t in layer.tables]
    np.testing.assert_array_equal(after[0], tables[0].astype("float32"))
    np.testing.assert_allclose(after[1][admit - offsets[1]],
                               layer.fallback_outputs([77])[0] @ pinv, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(after[1][move - offsets[1]], tables[0][source] @ pinv,
                               rtol=1e-4, atol=1e-6)
    untouched = [r for r in range(after[1].shape[0]) if r not in (0, 2)]
    np.testing.assert_array_equal(after[1][untouched], tables[1][untouched].astype("float32"))
    for t, rows in ((0, slice(None)), (1, untouched)):
        for before, now in zip(slots[t], slots_of(model, layer, t)):
            np.testing.assert_array_equal(now[rows], before[rows])
    for now in slots_of(model, layer, 1):
        assert not now[[0, 2]].any()
    expected_tags = tags.copy()
    expected_tags[[admit, move]] = [5, 6]
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.slot_tags), expected_tags)


def test_live_ids_size_the_fallback_and_the_config_keeps_the_shapes():
    for live in (100_000, 1_000_000):   # a fallback at the default width, a wide one
        layer = DynamicEmbedding(16, 65536, live_ids=live)
        default = DynamicEmbedding(16, 65536).plan
        assert layer.plan.fallback_buckets * layer.plan.fallback_dim > \
            default.fallback_buckets * default.fallback_dim
        assert sum(layer.plan.tier_rows) < sum(default.tier_rows)
        # the config records the resulting fallback_buckets and width,
        # which rebuild it
        assert DynamicEmbedding.from_config(layer.get_config()).plan == layer.plan
    with pytest.raises(ValueError, match="live_ids=0"):
        DynamicEmbedding(16, 65536, live_ids=0)


def test_a_file_with_one_variable_per_table_loads_into_the_per_width_variables(tmp_path):
    # versions before the flat variable saved each tier table, projection and
    # fallback table as its own variable (in the layout's order), the tags last
    h5py = pytest.importorskip("h5py")
    keras.utils.set_random_seed(2)
    layer = make([2, 3], (4, 2), min_count=1)
    model = model_of(layer)
    keys = np.array([5, 6, 7, 2**40, 99], np.int64)
    layer.update(keys[:4], optimizer=model.optimizer)
    expected = model.predict(layer.lookup_ids(keys), verbose=0)
    path = tmp_path / "separate.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "r+") as file:
        groups = []
        file.visititems(lambda name, item: groups.append(item)
                        if isinstance(item, h5py.Group) and "id_map_keys" in item else None)
        (store,) = groups
        count = len(layer.width_tables)
        buffers, tags = [store[str(i)][...] for i in range(count)], store[str(count)][...]
        for i in range(count + 1):
            del store[str(i)]
        parts = layer.part_views(buffers)
        for i, value in enumerate(parts.values()):
            store[str(i)] = value
        store[str(len(parts))] = tags
    # tiers 0 and 1, tier 1's projection, QR's two tables and their projection
    assert len(parts) == 6
    keras.utils.set_random_seed(3)
    loaded = make([2, 3], (4, 2), min_count=1)
    other = model_of(loaded)
    other.predict(loaded.lookup_ids(keys), verbose=0)   # builds it, other weights
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict(loaded.lookup_ids(keys), verbose=0), expected)
    # one variable per width: 4 (tier 0, the projections), 2 (tier 1, QR's tables)
    assert [tuple(v.shape) for v in loaded.trainable_variables] == [(2 + 2 + 2, 4),
                                                                   (3 + 2 + 2, 2)]
    np.testing.assert_array_equal(loaded.id_map.keys, layer.id_map.keys)


def test_part_refuses_a_name_that_is_no_part_and_names_it():
    layer = DynamicEmbedding(8, 64 * 1024, name="d")
    layer.build()
    # a full-width tier has no projection, a QR fallback no hashed table: None
    assert layer.part("tier_0_projection") is None
    assert layer.part("fallback_embeddings") is None
    assert tuple(layer.part("tier_1_embeddings").shape) == layer.layout.shape["tier_1_embeddings"]
    # a misspelt name, or a tier the layer does not have, is an error (not None)
    for name in ("tier_0_embedding", f"tier_{layer.num_tiers}_embeddings", "fallback"):
        with pytest.raises(ValueError, match=repr(name)):
            layer.part(name)


# -- under SparseRowOptimizer --------------------------------------------------

def id_safe_model_of(layer, optimizer):
    """The model with the row step on JAX (IdSafeModel's)."""
    inputs = keras.Input((3,), dtype="int32")
    model = IdSafeModel(inputs, keras.layers.Dense(1)(layer(inputs)))
    model.compile(optimizer, "mse")
    return model


def table_values(layer):
    return [ops.convert_to_numpy(v).copy() for v in layer.width_tables]


def test_sparse_rows_match_keras_on_touched_rows_and_leave_the_rest_bit_for_bit():
    # four copies of one layer: SparseRowOptimizer's SGD and lazy Adam, and
    # Keras's own; Keras's SGD step tells which rows the gradient touches
    layers_ = [make([24, 40], (4, 2), min_count=2) for _ in range(4)]
    models = [id_safe_model_of(layers_[0], SparseRowOptimizer(
                  keras.optimizers.SGD(0.05), table_optimizer="sgd", table_learning_rate=0.05)),
              id_safe_model_of(layers_[1], keras.optimizers.SGD(0.05)),
              id_safe_model_of(layers_[2], SparseRowOptimizer(
                  keras.optimizers.Adam(0.05), table_optimizer="adam",
                  table_learning_rate=0.05)),
              id_safe_model_of(layers_[3], keras.optimizers.Adam(0.05))]
    for model in models[1:]:
        model.set_weights(models[0].get_weights())
    for layer in layers_:
        layer.update([5, 5, 6, 6, 7])   # 5 and 6 admitted, 7 reads the fallback
    packed = layers_[0].lookup_ids([5, 6, 7, 6])
    y = np.linspace(-1, 1, 4).reshape(4, 1).astype("float32")
    for model in models[2:]:
        fill_slots(model)   # the same nonzero slots for both Adams
    before = table_values(layers_[0])
    slots_before = [[ops.convert_to_numpy(s).copy() for s in slot_variables(
        models[2].optimizer, v)] for v in layers_[2].width_tables]
    for model in models:
        for _ in range(2):   # the same rows each step: lazy Adam is Adam there
            model.train_on_batch(packed, y)
    for layer, model in zip(layers_[::2], models[::2]):
        assert all(any(v is t for t in model.optimizer.table_variables)
                   for v in layer.width_tables)
    touched = [(a != b).any(axis=1) for a, b in zip(table_values(layers_[1]), before)]
    wide = layers_[0].layout.buffer["tier_1_projection"]
    assert touched[wide][layers_[0].layout.rows("tier_1_projection")].all()
    for sparse, dense in ((0, 1), (2, 3)):
        got, want = table_values(layers_[sparse]), table_values(layers_[dense])
        for b, variable in enumerate(layers_[sparse].width_tables):
            rows, rest = touched[b], ~touched[b]
            assert rest.sum() > 20   # most of the capacity
            # (Adam's bias correction `1 - beta_2 ** t` loses digits in
            # float32: the tolerance of the package's other Adam comparisons)
            np.testing.assert_allclose(got[b][rows], want[b][rows], rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(got[b][rest], before[b][rest])
            if sparse == 0:   # SGD: untouched rows have no gradient, so Keras's too
                np.testing.assert_array_equal(want[b][rest], before[b][rest])
                continue
            # Keras's dense Adam moves the untouched rows on their momentum
            assert not np.allclose(want[b][rest], before[b][rest])
            for slot, old in zip(slot_variables(models[2].optimizer, variable),
                                 slots_before[b]):
                np.testing.assert_array_equal(ops.convert_to_numpy(slot)[rest], old[rest])


def ftrl_weights(linear, accumulator, lr, l1, l2=0.0, beta=0.0, power=-0.5):
    """Keras's FTRL weights from its slots (`keras.optimizers.Ftrl`'s step
    with a zero gradient), in numpy."""
    quadratic = accumulator ** -power / lr + 2 * (l2 + beta / (2 * lr))
    return (np.clip(linear, -l1, l1) - linear) / quadratic


@pytest.mark.parametrize("kind", ["adam", "adagrad", "ftrl"])
def test_a_reused_row_starts_with_fresh_sparse_row_slots_on_both_write_paths(kind):
    options = {"l1_regularization_strength": 0.01} if kind == "ftrl" else {}
    layer = make([2], (4,), eviction="lfu")
    model = id_safe_model_of(layer, SparseRowOptimizer(
        keras.optimizers.Adam(0.05), table_optimizer=kind, table_learning_rate=0.1, **options))
    optimizer = model.optimizer
    layer.attach_optimizer(optimizer)
    buffer = layer.width_tables[layer.layout.buffer["tier_0_embeddings"]]
    start = layer.layout.start["tier_0_embeddings"]
    y = np.ones((2, 1), "float32")

    def slots():
        return [ops.convert_to_numpy(s).copy() for s in slot_variables(optimizer, buffer)]

    def check_fresh(key, stayer, trained):
        row = start + int(layer.id_map.find([key])[0])
        other = start + int(layer.id_map.find([stayer])[0])
        now = slots()
        for old, new in zip(trained, now):
            np.testing.assert_array_equal(new[other], old[other])
        weights = ops.convert_to_numpy(buffer)[row]
        if kind == "adam":
            assert len(now) == 2 and not any(s[row].any() for s in now)
        elif kind == "adagrad":   # row-wise: one accumulator a row
            assert len(now) == 1 and now[0].shape == (buffer.shape[0],)
            assert now[0][row] == np.float32(0.1)
        else:   # FTRL's next step recomputes the row's weights from its slots
            accumulator, linear = now
            np.testing.assert_array_equal(accumulator[row], np.float32(0.1))
            np.testing.assert_allclose(ftrl_weights(linear[row].astype(np.float64), 0.1,
                                                    0.1, 0.01), weights, rtol=1e-5)

    def train(keys):
        packed = layer.lookup_ids(keys)
        model.train_on_batch(packed, y)
        row = start + int(layer.id_map.find([keys[0]])[0])
        trained = slots()
        assert all(not np.array_equal(s[row], fresh[row]) for s, fresh in zip(trained, empty))
        return trained

    layer.update([10, 10, 10, 20], optimizer=optimizer)       # admits 10 and 20
    optimizer.build(model.trainable_variables)
    empty = slots()
    trained = train([20, 10])
    # the host path: 30, counted more than 20, takes its row
    victim = int(layer.id_map.find([20])[0])
    layer.update([30, 30], optimizer=optimizer)
    assert int(layer.id_map.find([30])[0]) == victim
    check_fresh(30, 10, trained)
    # the step's path: 40 takes 30's row by a write riding on its batch
    trained = train([30, 10])
    _, writes = layer.prepare([40, 40, 40])
    assert (writes[..., 0] == victim).any()
    layer._apply_writes(writes)
    check_fresh(40, 10, trained)

def random_writes(layer, rng, per_tier):
    """`prepare`-shaped writes: `per_tier[t]` entries of distinct slots of
    tier t (admissions from a bucket, some out of range, and moves from any
    tier or from no stored slot), padded with copies of the first; a tier
    without entries is padding (-1) with malformed entries (slots of other
    tiers, past the last slot)."""
    offsets, num_slots = layer.id_map.offsets, layer.id_map.num_slots
    writes = layer.no_writes()
    for t, count in enumerate(per_tier):
        if not count:
            junk = rng.choice([int(offsets[(t + 1) % layer.num_tiers]), num_slots, num_slots + 7])
            writes[0, t, 1:3] = [junk, 0, 1, 9]
            continue
        dest = offsets[t] + rng.choice(int(layer.plan.tier_rows[t]), count, replace=False)
        source = np.where(rng.random(count) < 0.5, rng.integers(0, num_slots, count),
                          rng.choice([-1, num_slots, num_slots + 3], count))
        bucket = rng.integers(-1, layer.plan.fallback_range + 2, count)
        writes[0, t, :count] = np.stack([dest, source, bucket, rng.integers(1, 99, count)], -1)
        writes[0, t, count:] = writes[0, t, 0]
    return writes


def written_layer():
    """A three-tier layer with filled optimizer slots, and every variable
    a row write may change (tables, tags, the optimizer's)."""
    layer = make([4, 5, 4], (4, 2, 1), max_writes=4)
    model = model_of(layer)
    layer.attach_optimizer(model.optimizer)
    fill_slots(model)
    return layer, [*layer.width_tables, layer.slot_tags, *model.optimizer.variables]


def run_writes(state, apply, writes):
    """The values of `state` before and after `apply(writes)`, which is
    then undone."""
    before = [ops.convert_to_numpy(v).copy() for v in state]
    apply(writes)
    after = [ops.convert_to_numpy(v).copy() for v in state]
    for v, value in zip(state, before):
        v.assign(value)
    return before, after


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="the host path of the writes runs where the step is eager")
def test_the_host_write_path_equals_the_graph_path():
    # the host path picks the written entries, computes each slot once and
    # maps only written tiers; the graph path (TensorFlow, JAX) writes every
    # entry with static shapes: both must leave the same rows, slots and tags
    layer, state = written_layer()
    rng = np.random.default_rng(0)
    for per_tier in ([0, 0, 0], [2, 0, 0], [0, 3, 4], [4, 1, 2], [1, 4, 0]):
        writes = random_writes(layer, rng, per_tier)
        before, graph = run_writes(state, layer._graph_writes, writes)
        _, host = run_writes(state, layer._apply_writes, writes)
        for a, b in zip(host, graph):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        changed = [not np.array_equal(a, b) for a, b in zip(host, before)]
        assert any(changed) == any(per_tier)


def reference_prepare(layer, id_map, dirty, keys, mask, timestamps):
    """`prepare` as first written (np.unique, a dict of writes in a Python
    loop over slots, the uint64 hash), on a separate `DynamicIdMap` and
    deferred-write set `dirty`: what the vectorized `prepare` must equal."""
    if timestamps is not None and mask is not None:
        timestamps = np.asarray(timestamps)[mask]
    dirty_before = set(dirty)
    unique, inverse, counts = np.unique(keys if mask is None else keys[mask],
                                        return_inverse=True, return_counts=True)
    changes = id_map.update_unique(unique, counts, timestamps)
    writes = np.full((1, layer.num_tiers, layer.max_writes, 4), -1, np.int32)

    def buckets(k):
        return hashes.hash_tuple_numpy(key_pieces(k), layer._hash) % np.uint64(
            layer.plan.fallback_range)

    if dirty_before or not changes.empty:
        entries = {s: -1 for s in sorted(dirty_before) if id_map.used[s]}
        for slot in changes.reset_slots.tolist():
            entries.pop(slot, None)
            entries[slot] = -1
        stale = set(changes.reset_slots.tolist()) | dirty_before
        for source, slot in zip(changes.move_from.tolist(), changes.move_to.tolist()):
            entries.pop(slot, None)
            entries[slot] = -1 if source in stale else source
        dirty.clear()
        per_tier = {}
        for slot, source in entries.items():
            per_tier.setdefault(int(id_map.tier_of[slot]), []).append((slot, source))
        for t, pairs in per_tier.items():
            dirty.update(slot for slot, _ in pairs[layer.max_writes:])
            pairs = pairs[: layer.max_writes]
            slots = np.array([s for s, _ in pairs])
            rows = np.stack([slots, [s for _, s in pairs], buckets(id_map.keys[slots]),
                             id_map.tags[slots]], axis=-1)
            writes[0, t] = rows[0]
            writes[0, t, : len(pairs)] = rows
    slots, tags = id_map.lookup(unique)
    distinct = np.stack([slots, tags, buckets(unique)], axis=-1)
    packed = np.full((*keys.shape, 3), -1, np.int64)
    packed[..., 1] = 0
    if mask is None:
        packed = distinct[inverse.reshape(keys.shape)]
    else:
        packed[mask] = distinct[inverse.ravel()]
    return packed, writes


@pytest.mark.parametrize("eviction", ["lfu", "lru", "ttl"])
def test_prepare_equals_a_loop_reference_with_deferred_writes_moves_and_padding(
        eviction, monkeypatch):
    """Random batches (repeats that change nothing, padding, timestamps,
    many new ids so that writes are deferred, tier moves), packed ids,
    writes and every array of the map against `reference_prepare`; the
    merged sorted index (forced on this small map) against a re-sort."""
    from keras_mixed_dim.layers import dynamic_embedding

    rng = np.random.default_rng(7)
    layer = make([3, 6, 12], (4, 2, 1), eviction=eviction,
                 ttl=4 if eviction == "ttl" else None, rebalance_every=3, max_writes=2,
                 min_count=2)
    layer.id_map.MERGE_INDEX_FROM = 0
    # the small batches' dense ids counted, not sorted, as large ones' are
    monkeypatch.setattr(dynamic_embedding, "_COUNT_FROM", 1)
    reference_map = DynamicEmbedding(4, layer.capacity_bytes, tier_dims=(4, 2, 1),
                                     sketch_width=16, min_count=2, eviction=eviction,
                                     ttl=4 if eviction == "ttl" else None,
                                     rebalance_every=3, fallback_buckets=4).id_map
    dirty, batch, seen = set(), None, {"deferred": 0, "moved": 0, "no writes": 0}
    dense_rng = np.random.default_rng(8)
    for step in range(60):
        if step % 5 != 4:   # every fifth batch repeats the last one
            shape = (int(rng.integers(1, 30)),) if step % 3 else (int(rng.integers(1, 8)), 3)
            batch = ((rng.zipf(1.3, shape) * 7919) % 60 - 20) * (2**40 + 1)
            if step % 7 == 3:   # dense ids: `_unique` counts them, no sort
                batch = dense_rng.integers(-3, 4, shape)
        mask = rng.random(batch.shape) < 0.8 if step % 4 == 1 else None
        times = rng.integers(0, 30, batch.shape) if step % 6 == 2 else None
        packed, writes = layer.prepare(batch, timestamps=times, mask=mask)
        expected_packed, expected_writes = reference_prepare(
            layer, reference_map, dirty, batch, mask, times)
        np.testing.assert_array_equal(packed, expected_packed)
        np.testing.assert_array_equal(writes, expected_writes)
        np.testing.assert_array_equal(np.flatnonzero(layer.id_map.dirty), sorted(dirty))
        seen["deferred"] += bool(dirty)
        seen["moved"] += bool((writes[..., 1] >= 0).any())
        seen["no writes"] += bool((writes == -1).all())
        state, expected = layer.id_map.get_state(), reference_map.get_state()
        for name in expected:
            if name != "dirty":
                np.testing.assert_array_equal(state[name], expected[name], err_msg=name)
        used = np.flatnonzero(layer.id_map.used)
        order = np.argsort(layer.id_map.keys[used])
        size = layer.id_map.index_size
        np.testing.assert_array_equal(layer.id_map.index_keys[:size],
                                      layer.id_map.keys[used][order])
        np.testing.assert_array_equal(layer.id_map.index_slots[:size], used[order])
    assert min(seen.values()) > 0, seen


@pytest.mark.parametrize("low,span,size,shape", [
    (1, 1682, 4096, (4096,)),            # dense (counted): a vocabulary's indices
    (-(2**63), 40, 64, (8, 8)),          # dense at the bottom of int64
    (2**63 - 50, 50, 30, (30,)),         # dense at the top
    (-7, 3, 5, (5,)),
    (0, 1, 1, (1,)),
    (0, 2**20, 4096, (64, 64)),          # sparse (sorted)
    (-(2**63), 2**64, 300, (300,)),      # the whole int64 range
])
def test_unique_equals_np_unique_on_dense_and_sparse_keys(low, span, size, shape,
                                                         monkeypatch):
    from keras_mixed_dim.layers import dynamic_embedding
    from keras_mixed_dim.layers.dynamic_embedding import _unique

    # small batches too take the count where their ids are dense
    monkeypatch.setattr(dynamic_embedding, "_COUNT_FROM", 1)

    rng = np.random.default_rng(size)
    keys = (np.array(low, dtype=object) + rng.integers(0, min(span, 2**63), size)
            ).astype(np.int64).reshape(shape) if span < 2**63 else rng.integers(
                -(2**63), 2**63 - 1, size, dtype=np.int64, endpoint=True).reshape(shape)
    keys.flat[0], keys.flat[-1] = low, low + span - 1 if span < 2**63 else 2**63 - 1
    unique, inverse, counts = _unique(keys)
    expected = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
    for got, want in zip((unique, inverse, counts), expected):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_prepare_leaves_the_callers_int64_ids_as_they_were():
    # int64 ids are mapped without a copy: nothing may write to them
    layer = make([3, 6], (4, 2), rebalance_every=2)
    rng = np.random.default_rng(3)
    for ids in [rng.integers(0, 9, (6, 4)), rng.integers(-(2**62), 2**62, 24)] * 3:
        before = ids.copy()
        packed, _ = layer.prepare(ids, mask=ids % 3 != 0)
        np.testing.assert_array_equal(ids, before)
        np.testing.assert_array_equal(packed, layer.lookup_ids(before, mask=before % 3 != 0))


def test_gradients_reach_only_the_rows_each_id_reads():
    # each id's rows of every tier and of the fallback are gathered in one
    # lane per variable and masked: the gradient must be exactly what the
    # id's own piece gives (numpy), zero for invalid ids and stale tags
    from tests.helpers import gradients_of_sum

    keras.utils.set_random_seed(4)
    layer = make([2, 3], (4, 2), fallback="qr")
    keys = np.array([2**40 + 3, -3, 2**31, 77, 5, 6], np.int64)
    packed = layer.update(keys[:4])
    batch = np.concatenate([packed, layer.lookup_ids(keys[4:])])
    batch[1, 1] += 1            # a stale tag: reads the fallback
    batch[2, 0] = 10**6         # a slot out of range: reads the fallback
    batch[4] = (-1, 0, -1)      # padding: reads nothing
    batch[5, 2] = 10**6         # a bucket out of range, not admitted: nothing
    tables, projections = np_weights(layer)
    views = layer.part_views([ops.convert_to_numpy(v) for v in layer.width_tables])
    expected = layer.part_views([np.zeros(v.shape) for v in layer.width_tables])
    tags, offsets = ops.convert_to_numpy(layer.slot_tags), layer.id_map.offsets
    remainder = layer.plan.fallback_tables[1]
    quotient, rest = views["fallback_quotient"], views["fallback_remainder"]
    fallback_projection = views["fallback_projection"]
    admitted = 0
    for slot, tag, bucket in batch:
        if 0 <= slot < offsets[-1] and tag > 0 and tags[slot] == tag:
            t = int(np.searchsorted(offsets[1:], slot, side="right"))
            row = slot - offsets[t]
            if projections[t] is None:
                expected[f"tier_{t}_embeddings"][row] += 1.0
            else:
                expected[f"tier_{t}_embeddings"][row] += projections[t].sum(1)
                expected[f"tier_{t}_projection"] += tables[t][row][:, None]
            admitted += 1
        elif 0 <= bucket < layer.plan.fallback_range:
            q, r = bucket // remainder, bucket % remainder
            upstream = fallback_projection.sum(1)
            expected["fallback_quotient"][q] += upstream * rest[r]
            expected["fallback_remainder"][r] += upstream * quotient[q]
            expected["fallback_projection"] += (quotient[q] * rest[r])[:, None]
    assert admitted == 2
    grads = gradients_of_sum(layer, batch, jit=True)
    got = layer.part_views([grads[v.path.split("/")[-1]] for v in layer.width_tables])
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_diverged_row_reaches_only_its_own_ids_output():
    # every id gathers a row of every piece (static shapes); the pieces it
    # does not read are other ids' rows and must not leak into its output,
    # even as NaN or inf (0 * inf is NaN)
    layer = DynamicEmbedding(8, 60_000, min_count=1, seed=1, tier_dims=(8, 4, 2))
    layer.update(np.arange(300))
    packed = layer.lookup_ids(np.arange(2000))
    before = np.isnan(ops.convert_to_numpy(layer(packed))).any(-1)
    assert not before.any()
    name = "tier_1_embeddings"
    table = layer.width_tables[layer.layout.buffer[name]]
    values = ops.convert_to_numpy(table).copy()
    row = layer.layout.start[name]   # the tier's first slot
    values[row] = np.inf
    table.assign(values)
    slot = int(layer.id_map.offsets[1])
    owners = packed[..., 0] == slot
    assert owners.sum() == 1
    after = ~np.isfinite(ops.convert_to_numpy(layer(packed))).all(-1)
    np.testing.assert_array_equal(after, owners)


def test_a_full_width_fallback_has_no_projection():
    layer = DynamicEmbedding(16, 65536, live_ids=1_400_000)
    layer.build()
    assert layer.plan.fallback_dim == 16
    assert layer.fallback_projection is None
    assert layer.get_config()["fallback_dim"] == 16


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="TensorFlow's copy of a variable on a dense read")
def test_a_traced_step_with_writes_reads_no_variable_of_the_layer_whole():
    # once a TensorFlow variable has been gathered from, each dense read of
    # it copies it whole: a step under SparseRowOptimizer that read one
    # (the tags, say) would cost in proportion to the capacity
    import tensorflow as tf

    layer = make([2, 3], (4, 2))
    ids = keras.Input((3,), dtype="int32")
    writes = layer.writes_input()
    model = IdSafeModel([ids, writes], keras.layers.Dense(1)(layer(ids, writes=writes)))
    model.compile(SparseRowOptimizer(keras.optimizers.Adam(0.05)), "mse")
    layer.attach_optimizer(model.optimizer)
    packed, step_writes = layer.prepare(np.arange(6))
    model.train_on_batch([packed, step_writes], np.zeros((6, 1), "float32"))
    graph = tf.function(model.train_step).get_concrete_function(
        ([tf.constant(packed), tf.constant(step_writes)], tf.zeros((6, 1)))).graph
    handles = {id(v.value.handle) for v in layer.weights}
    inside = {id(inner) for outer, inner in graph.captures if id(outer) in handles}
    dense = [op.name for op in graph.get_operations()
             if op.type == "ReadVariableOp" and id(op.inputs[0]) in inside]
    assert inside and not dense, dense


def test_a_diverged_tier_row_gives_the_shared_qr_rows_no_nan_gradient():
    # the narrowest tier shares its lane with the QR quotient: an id reading
    # its tier holds that tier's row where the quotient would be, and the
    # remainder row of its bucket (read by fallback ids) must get no 0 * inf
    layer = DynamicEmbedding(4, 60_000, min_count=1, seed=1, tier_dims=(4, 2, 1))
    layer.update(np.arange(300))
    assert layer.layout.buffer["tier_2_embeddings"] == layer.layout.buffer["fallback_quotient"]
    packed = layer.lookup_ids(np.arange(2000))
    slot = int(layer.id_map.offsets[2])
    assert (packed[..., 0] == slot).sum() == 1
    name = "tier_2_embeddings"
    table = layer.width_tables[layer.layout.buffer[name]]
    values = ops.convert_to_numpy(table).copy()
    values[layer.layout.start[name]] = np.inf
    table.assign(values)
    from tests.helpers import gradients_of_sum

    grads = gradients_of_sum(layer, packed)
    views = layer.part_views([grads[v.path.split("/")[-1]] for v in layer.width_tables])
    for part in ("fallback_quotient", "fallback_remainder", "fallback_projection",
                 "tier_0_embeddings", "tier_1_embeddings", "tier_2_embeddings"):
        assert np.isfinite(views[part]).all(), part


def test_mixed_precision_reads_the_tables_as_float32_and_casts_only_the_output():
    # Keras opens an autocast scope around a layer whose dtypes are mixed
    # (called on its own too); the tables must still be read as float32
    layers_ = [DynamicEmbedding(8, 60_000, min_count=1, seed=1, tier_dims=(8, 4, 2),
                                dtype=dtype) for dtype in ("mixed_float16", "float32")]
    for layer in layers_:
        layer.update(np.arange(300))
    layers_[1].set_weights(layers_[0].get_weights())
    packed = layers_[0].lookup_ids(np.arange(-5, 600))
    mixed, full = (layer(packed) for layer in layers_)
    assert keras.backend.standardize_dtype(mixed.dtype) == "float16"
    assert all(v.dtype == "float32" for v in layers_[0].width_tables)
    np.testing.assert_array_equal(ops.convert_to_numpy(mixed),
                                  ops.convert_to_numpy(full).astype("float16"))



@pytest.mark.parametrize("dtype", ["mixed_float16", "float32"])
def test_the_layer_converts_its_arguments_as_keras_does(dtype):
    # `call` converts its arguments itself (Keras's conversion is off for
    # the layer, for speed): numpy ids and float64 bag weights, positional,
    # give what they give through Keras's own conversion, bit for bit
    layer = make([2, 3], (4, 2), combiner="sum", bag_size=3, dtype=dtype)
    rng = np.random.default_rng(5)
    packed = layer.update(rng.integers(0, 6, (40, 3)))
    weights = rng.uniform(0.1, 3.0, (40, 3))
    got = ops.convert_to_numpy(layer(packed, weights))
    layer._convert_input_args = True
    want = ops.convert_to_numpy(layer(packed, weights))
    assert got.dtype == want.dtype == np.dtype(dtype[-7:])
    np.testing.assert_array_equal(got, want)
