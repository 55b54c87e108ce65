"""`model.fit` over a whole stream: row writes ride on the batches
(`DynamicEmbedding.prepare`, `dynamic_batches`) and the train step applies
them; checked against the host `update` + `train_on_batch` path."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim import DynamicEmbedding
from keras_mixed_dim.dynamic import dynamic_batches
from keras_mixed_dim.dynamic import stream as stream_module
from tests.layers.test_dynamic_embedding import capacity_for



def make(rows, dims, **kwargs):
    kwargs.setdefault("min_count", 1)
    return DynamicEmbedding(4, capacity_for(rows, dims), tier_dims=dims,
                            fallback_buckets=4, sketch_width=16, **kwargs)


def model_of(layer, optimizer, writes=True):
    ids = keras.Input((3,), dtype="int32", name="ids")
    if writes:
        writes = layer.writes_input("ids_writes")
        model = keras.Model({"ids": ids, "ids_writes": writes},
                            keras.layers.Dense(1)(layer(ids, writes=writes)))
    else:
        model = keras.Model({"ids": ids}, keras.layers.Dense(1)(layer(ids)))
    model.compile(optimizer, "mse")
    return model


def stream(n, seed=0, size=8):
    rng = np.random.default_rng(seed)
    return [({"ids": (rng.zipf(1.3, size) - 1) * 2**35 + 5},
             rng.normal(size=(size, 1)).astype("float32")) for _ in range(n)]


def probe(model, layer, keys):
    x = {"ids": layer.lookup_ids(keys)}
    if len(model.inputs) == 2:
        x["ids_writes"] = layer.no_writes()
    return model.predict_on_batch(x)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_fit_over_a_stream_equals_update_between_steps(prefetch):
    kwargs = dict(min_count=2, rebalance_every=2, decay=0.9, eviction="lfu")
    batches = stream(6)
    keras.utils.set_random_seed(3)
    fast = make([3, 5], (4, 2), **kwargs)
    model = model_of(fast, keras.optimizers.Adam(0.05))
    slow = make([3, 5], (4, 2), **kwargs)
    reference = model_of(slow, keras.optimizers.Adam(0.05), writes=False)
    reference.set_weights(model.get_weights())

    model.fit(dynamic_batches(batches, {"ids": fast}, model, prefetch=prefetch), verbose=0)
    assert_update_between_steps_matches(model, fast, reference, slow, batches)


def assert_update_between_steps_matches(model, fast, reference, slow, batches):
    """Trains `reference` with `update` between steps over `batches` and
    checks it against `model`, trained over them by `fit`: the maps, the
    outputs and every optimizer variable."""
    for x, y in batches:
        reference.train_on_batch(
            {"ids": slow.update(x["ids"], optimizer=reference.optimizer)}, y)
    keys = np.concatenate([x["ids"] for x, _ in batches])
    assert slow.id_map.size > 3 and (fast.id_map.keys == slow.id_map.keys).all()
    np.testing.assert_allclose(probe(model, fast, keys), probe(reference, slow, keys),
                               rtol=1e-4, atol=1e-5)
    for a, b in zip(model.optimizer.variables, reference.optimizer.variables):
        if len(a.shape) == 0:
            continue   # TF's fit over a generator counts one iteration more
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b),
                                   rtol=1e-4, atol=1e-5)


def test_deferred_writes_under_eviction_never_read_another_ids_row():
    # with a zero learning rate a row written for an id holds exactly that
    # id's fallback vector (one full-width tier), so every id must read its
    # own fallback vector, whether its write was applied or deferred;
    # reading another id's row would give another vector
    layer = make([4], (4,), eviction="lru", max_writes=1)
    model = model_of(layer, keras.optimizers.SGD(0.0))
    batches = stream(8, seed=1)
    model.fit(dynamic_batches(batches, {"ids": layer}, model), verbose=0)
    keys = np.unique(np.concatenate([x["ids"] for x, _ in batches]))
    packed = layer.lookup_ids(keys)
    assert (layer.id_map.dirty.sum() > 0 or layer.id_map.size == 4)
    embed = keras.Model(model.inputs, model.layers[-2].output)
    got = embed.predict_on_batch({"ids": packed, "ids_writes": layer.no_writes()})
    np.testing.assert_allclose(got, layer.fallback_outputs(keys), rtol=1e-5, atol=1e-6)
    read_rows = (packed[:, 0] >= 0) & (
        ops.convert_to_numpy(layer.slot_tags)[np.maximum(packed[:, 0], 0)] == packed[:, 1])
    assert read_rows.any()   # some ids do read their rows


def test_a_run_resumed_mid_stream_equals_an_uninterrupted_one(tmp_path):
    batches = stream(6, seed=2)
    keras.utils.set_random_seed(4)
    layer = make([3, 5], (4, 2), min_count=2, rebalance_every=2, max_writes=1)
    model = model_of(layer, keras.optimizers.Adam(0.05))
    model.fit(dynamic_batches(batches[:3], {"ids": layer}, model), verbose=0)
    assert layer.id_map.dirty.any()   # deferred writes are saved too
    model.save(tmp_path / "half.keras")
    model.fit(dynamic_batches(batches[3:], {"ids": layer}, model), verbose=0)
    keys = np.concatenate([x["ids"] for x, _ in batches])
    expected = probe(model, layer, keys)

    model = keras.saving.load_model(tmp_path / "half.keras")
    layer = model.get_layer(layer.name)
    model.fit(dynamic_batches(batches[3:], {"ids": layer}, model), verbose=0)
    np.testing.assert_array_equal(probe(model, layer, keys), expected)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's trainer only")
def test_jax_refuses_writes_that_no_installed_step_applies():
    layer = make([3], (4,))
    model = model_of(layer, keras.optimizers.Adam())
    packed, writes = layer.prepare([1, 2])
    # Keras wraps the error of a symbolic build in a RuntimeError
    with pytest.raises((NotImplementedError, RuntimeError), match="dynamic_batches"):
        model.train_on_batch({"ids": packed, "ids_writes": writes}, np.ones((2, 1)))


def test_fit_over_a_stream_under_sparse_row_optimizer_equals_update_between_steps():
    # row-wise Adagrad: a slot of one value a row, fresh at initial_accumulator_value;
    # on JAX the installed write step runs IdSafeModel's row step after the writes
    import warnings

    from keras_mixed_dim import IdSafeModel
    from keras_mixed_dim import SparseRowOptimizer

    def id_safe(layer, writes):
        ids = keras.Input((3,), dtype="int32", name="ids")
        inputs, kwargs = {"ids": ids}, {}
        if writes:
            inputs["ids_writes"] = kwargs["writes"] = layer.writes_input("ids_writes")
        model = IdSafeModel(inputs, keras.layers.Dense(1)(layer(ids, **kwargs)))
        model.compile(SparseRowOptimizer(keras.optimizers.Adam(0.05), table_optimizer="adagrad",
                                         table_learning_rate=0.1), "mse")
        return model

    kwargs = dict(min_count=2, rebalance_every=2, decay=0.9, eviction="lfu")
    batches = stream(6)
    fast, slow = make([3, 5], (4, 2), **kwargs), make([3, 5], (4, 2), **kwargs)
    model, reference = id_safe(fast, True), id_safe(slow, False)
    reference.set_weights(model.get_weights())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(dynamic_batches(batches, {"ids": fast}, model), verbose=0)
    assert not [w for w in caught if "dense gradient" in str(w.message)]
    assert [v.name for v in model.optimizer.table_variables] == [
        v.name for v in fast.width_tables]
    assert_update_between_steps_matches(model, fast, reference, slow, batches)


def test_bad_max_writes_names_the_value():
    with pytest.raises(ValueError, match="max_writes=0"):
        make([3], (4,), max_writes=0)


def test_the_mapping_thread_keeps_the_order_and_raises_the_streams_error():
    def source():
        yield from range(5)
        raise KeyError("bad batch")

    got = []
    with pytest.raises(KeyError, match="bad batch"):
        for item in stream_module._ahead(source(), 2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_the_stream_maps_every_layer_as_prepare_in_turn():
    # `dynamic_batches` maps all layers, then hashes their keys together by
    # (seed, fallback range): each layer must get what its own `prepare`
    # gives, whether it shares the hash (a with itself), has another range
    # (b) or another seed (d), and a layer serving two features ("a", "a2")
    # must map them in turn
    def layers():
        return {"a": make([3, 5], (4, 2), rebalance_every=2, max_writes=2),
                "b": DynamicEmbedding(4, capacity_for([3, 5], (4, 2)), tier_dims=(4, 2),
                                      fallback_buckets=6, sketch_width=16, min_count=1),
                "d": make([3], (4,), seed=7)}

    batches = stream(5, seed=5, size=10)
    batches = [({"a": x["ids"], "a2": x["ids"][::-1] + 1, "b": x["ids"] + 2,
                 "d": x["ids"] - 4}, y) for x, y in batches]
    fast, slow = layers(), layers()
    fast["a2"], slow["a2"] = fast["a"], slow["a"]
    assert fast["a"].plan.fallback_range != fast["b"].plan.fallback_range
    for (x, y), (got, got_y) in zip(batches, stream_module._mapped(batches, fast, None)):
        assert got_y is y
        for name, layer in slow.items():
            packed, writes = layer.prepare(x[name])
            np.testing.assert_array_equal(got[name], packed)
            np.testing.assert_array_equal(got[name + "_writes"], writes)
    assert (fast["a"].id_map.tags > 0).sum() > 3 and (fast["a"].id_map.keys != 0).any()
    for name in fast:
        for key, value in fast[name].id_map.get_state().items():
            np.testing.assert_array_equal(value, slow[name].id_map.get_state()[key])
