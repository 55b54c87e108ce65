import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.compress import QuantizedMixedDimEmbedding
from keras_mixed_dim.compress import mixed_dim_from_embedding
from keras_mixed_dim.compress import quantize_layer
from keras_mixed_dim.compress import quantize_model
from keras_mixed_dim.compress import quantize_rows

ROWS, DIM = 3000, 16


def weight_bytes(layer):
    """What the built layer stores: every weight at its own dtype."""
    return sum(int(np.prod(w.shape))
               * np.dtype(keras.backend.standardize_dtype(w.dtype)).itemsize
               for w in layer.weights)


def converted_layer(name="items"):
    rng = np.random.default_rng(0)
    weights = (rng.normal(size=(ROWS, DIM)) * np.geomspace(1, 0.1, DIM)).astype("float32")
    counts = rng.permutation(1.0 / np.arange(1, ROWS + 1))
    # alpha 0.1: the head blocks are projected before the lookup, the tail
    # ones after, so both dequantization paths are exercised
    return mixed_dim_from_embedding(weights, counts, alpha=0.1, num_blocks=4, name=name)


def reference_outputs(layer, ids, mode):
    """Outputs computed in numpy from the float layer's weights."""
    ranks = np.asarray(ops.convert_to_numpy(layer.ranks(ids)))
    result = np.zeros(ids.shape + (DIM,))
    for i, block in enumerate(layer.plan.blocks):
        table = np.asarray(ops.convert_to_numpy(layer.block_embeddings[i]))
        if mode == "int8":
            q, scale = quantize_rows(table)
            table = q.astype(np.float64) / scale[:, None]
        elif mode == "float16":
            table = table.astype(np.float16).astype(np.float64)
        projection = layer.block_projections[i]
        if projection is not None:
            table = table @ np.asarray(ops.convert_to_numpy(projection))
        member = (ranks >= block.start) & (ranks < block.stop)
        result[member] = table[ranks[member] - block.start]
    return result


def test_quantize_rows_follows_keras_abs_max():
    from keras.src import quantizers

    table = np.random.default_rng(1).normal(size=(50, 7)).astype("float32")
    table[3] = 0.0
    q, scale = quantize_rows(table)
    keras_q, keras_scale = quantizers.abs_max_quantize(table, axis=-1, to_numpy=True)
    np.testing.assert_array_equal(q, ops.convert_to_numpy(keras_q))
    np.testing.assert_allclose(scale, ops.convert_to_numpy(keras_scale)[:, 0], rtol=1e-6)
    assert q.dtype == np.int8 and not np.any(q[3])
    # error at most half a quantization step per element
    step = np.max(np.abs(table), axis=1, keepdims=True) / 127
    assert np.all(np.abs(q / scale[:, None] - table) <= step / 2 + 1e-7)


@pytest.mark.parametrize("mode", ["int8", "float16"])
def test_quantized_layer_dequantizes_within_tolerance(mode):
    layer = converted_layer()
    assert 0 < layer._head_blocks < layer.plan.num_blocks
    quantized = quantize_layer(layer, mode)
    assert isinstance(quantized, QuantizedMixedDimEmbedding)
    ids = np.concatenate([np.arange(ROWS), [-1, ROWS]]).reshape(-1, 2)
    got = ops.convert_to_numpy(quantized(ids))
    np.testing.assert_allclose(got, reference_outputs(layer, ids, mode), atol=1e-5)
    exact = ops.convert_to_numpy(layer(ids))
    relative = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert 0 < relative < (0.01 if mode == "int8" else 0.001)
    np.testing.assert_array_equal(got[-1], 0)  # out-of-range ids
    # bytes: tables at 1 (int8) or 2 bytes, scales, float32 projections and remap
    table_entries = sum(b.rows * b.dim for b in layer.plan.blocks)
    expected = (layer.plan.bytes - 4 * table_entries
                + table_entries * (1 if mode == "int8" else 2)
                + (4 * ROWS if mode == "int8" else 0))
    assert weight_bytes(quantized) == expected == quantized.bytes
    assert not any(v.trainable for v in quantized.block_embeddings)


def test_quantized_model_saves_reloads_and_bad_inputs(tmp_path):
    layer = converted_layer()
    inputs = keras.Input((3,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(
        keras.layers.Flatten()(layer(inputs))))
    new_model, report = quantize_model(model, "int8")
    assert report.layers[0].bytes_after < report.layers[0].bytes_before
    np.testing.assert_array_equal(new_model.get_layer("head").get_weights()[0],
                                  model.get_layer("head").get_weights()[0])
    ids = np.random.default_rng(0).integers(0, ROWS, (8, 3))
    path = tmp_path / "q.keras"
    new_model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded.get_layer("items"), QuantizedMixedDimEmbedding)
    np.testing.assert_allclose(reloaded.predict(ids, verbose=0),
                               new_model.predict(ids, verbose=0), atol=1e-6)
    # int8 rounding moves each embedding entry by at most its bound, and the
    # head's output k by at most sum over entries of bound * |W[entry, k]|
    ranks = np.asarray(ops.convert_to_numpy(layer.ranks(ids)))
    bound = int8_error_bound(
        layer.plan, [ops.convert_to_numpy(t) for t in layer.block_embeddings],
        [None if p is None else ops.convert_to_numpy(p) for p in layer.block_projections],
        ranks).reshape(len(ids), -1)
    head = np.abs(model.get_layer("head").get_weights()[0].astype(np.float64))
    error = np.abs(new_model.predict(ids, verbose=0) - model.predict(ids, verbose=0))
    assert np.all(error <= bound @ head + FLOAT32_SLACK), np.max(error - bound @ head)
    assert np.any(error > 0)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_layer(reloaded.get_layer("items"))
    with pytest.raises(ValueError, match="mode"):
        quantize_layer(layer, "int4")
    with pytest.raises(ValueError, match="no MixedDimEmbedding"):
        quantize_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    with pytest.raises(ValueError, match="'head' is not a float MixedDimEmbedding"):
        quantize_model(model, layer_names="head")
    with pytest.raises(ValueError, match="keras.layers.Embedding"):
        plain = keras.layers.Embedding(4, 2)
        plain.build()
        quantize_layer(plain)


def half_steps(table):
    """Per row, the most int8 rounding moves an entry: half a step,
    `0.5 / scale` (no entry is clipped: `|x| * scale < 127`)."""
    _, scale = quantize_rows(table)
    return 0.5 / scale.astype(np.float64)


def int8_error_bound(plan, tables, projections, ranks):
    """Per output entry, the most int8 rounding of the tables can move the
    vectors of `ranks`: half a step of the row, times `sum_j |P[j, d]|` when
    the block is projected (each of the row's `w` entries moves at most that
    much and reaches entry `d` through `P[j, d]`)."""
    bound = np.zeros(ranks.shape + (plan.output_dim,))
    for block, table, projection in zip(plan.blocks, tables, projections):
        member = (ranks >= block.start) & (ranks < block.stop)
        steps = half_steps(np.asarray(table))[ranks[member] - block.start]
        gain = (np.ones(plan.output_dim) if projection is None
                else np.abs(np.asarray(projection, np.float64)).sum(axis=0))
        bound[member] = steps[:, None] * gain
    return bound


# float32 arithmetic on top of the rounding bound (dequantizing, the
# projection matmuls, the dense head): a few ulps of values of order 1
FLOAT32_SLACK = 1e-5


def stacked_dlrm(cards=(1200, 30)):
    from keras_mixed_dim.compress import compress_model
    from keras_mixed_dim.models.dlrm import dlrm

    keras.utils.set_random_seed(0)
    model = dlrm([keras.layers.Embedding(c, 8, name=f"embedding_{f}")
                  for f, c in enumerate(cards)], 8, bottom=(8,), top=(8,), num_dense=4)
    counts = {f"embedding_{f}": np.random.default_rng(f).permutation(
        1.0 / np.arange(1, c + 1)) for f, c in enumerate(cards)}
    # alpha 0.1: MD blocks with and without projections in the stacked groups
    compressed, _ = compress_model(model, counts, budget_fraction=0.5, alpha=0.1)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, cards, size=(32, len(cards))).astype("int32")
    ids[0, 0], ids[1, 1] = -1, cards[1]  # out of range: zeros
    x = {"dense": rng.random((32, 4)).astype("float32"), "categorical": ids}
    return compressed, x


def test_a_compressed_stacked_dlrm_quantizes_saves_and_exports(tmp_path):
    import tensorflow as tf

    from keras_mixed_dim.compress import QuantizedStackedEmbedding
    from keras_mixed_dim.export import export_for_serving

    model, x = stacked_dlrm()
    stacked = model.get_layer("embeddings")
    assert stacked.plans[0].num_blocks > 1 and any(g.projected for g in stacked.groups)
    quantized_model, report = quantize_model(model, "int8")
    quantized = quantized_model.get_layer("embeddings")
    assert isinstance(quantized, QuantizedStackedEmbedding)
    assert [e.name for e in report.layers] == ["embeddings"]
    assert report.layers[0].bytes_after == weight_bytes(quantized) == quantized.bytes
    assert report.layers[0].bytes_after < report.layers[0].bytes_before

    # the embeddings: within the int8 rounding bound of the float layer's
    ids = x["categorical"]
    got = ops.convert_to_numpy(quantized(ids))
    exact = ops.convert_to_numpy(stacked(ids))
    for f in range(stacked.num_features):
        tables, projections = stacked.feature_weights(f)
        valid = (ids[:, f] >= 0) & (ids[:, f] < stacked.input_dims[f])
        ranks = np.where(valid, stacked.feature_ranks(f)[np.where(valid, ids[:, f], 0)], -1)
        bound = int8_error_bound(stacked.plans[f], tables, projections, ranks)
        error = np.abs(got[:, f] - exact[:, f])
        assert np.all(error <= bound + FLOAT32_SLACK), (f, np.max(error - bound))
        assert np.any(error > 0)  # int8 did round
    np.testing.assert_array_equal(got[0, 0], 0)
    np.testing.assert_array_equal(got[1, 1], 0)

    # the rest of the model is the float model's: the same model with the
    # dequantized tables predicts what the int8 model predicts
    dequantized = keras.models.clone_model(model)
    dequantized.set_weights(model.get_weights())
    for table, q, scale in zip(dequantized.get_layer("embeddings").tables,
                               quantized.tables, quantized.scales):
        table.assign(ops.convert_to_numpy(q).astype("float32")
                     / ops.convert_to_numpy(scale)[:, None])
    expected = quantized_model.predict(x, verbose=0)
    np.testing.assert_allclose(dequantized.predict(x, verbose=0), expected,
                               atol=FLOAT32_SLACK)

    path = tmp_path / "q.keras"
    quantized_model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded.get_layer("embeddings"), QuantizedStackedEmbedding)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), expected)
    export = export_for_serving(reloaded, tmp_path / "serving", "dlrm_int8")
    served = tf.saved_model.load(str(export.path)).signatures["serving_default"]
    outputs = served(dense=tf.constant(x["dense"]), categorical=tf.constant(ids))
    np.testing.assert_allclose(next(iter(outputs.values())).numpy(),
                               expected.reshape(-1), atol=1e-6)
    assert export.embedding_bytes == weight_bytes(quantized)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_layer(reloaded.get_layer("embeddings"))


def test_a_stacked_dlrm_quantizes_to_float16():
    model, x = stacked_dlrm()
    quantized_model, _ = quantize_model(model, "float16")
    quantized = quantized_model.get_layer("embeddings")
    stacked = model.get_layer("embeddings")
    # the model with float16-rounded tables, in float32
    rounded = keras.models.clone_model(model)
    rounded.set_weights(model.get_weights())
    for table, source in zip(rounded.get_layer("embeddings").tables, stacked.tables):
        table.assign(ops.convert_to_numpy(source).astype("float16").astype("float32"))
    np.testing.assert_allclose(quantized_model.predict(x, verbose=0),
                               rounded.predict(x, verbose=0), atol=FLOAT32_SLACK)
    assert all(ops.convert_to_numpy(t).dtype == np.float16 for t in quantized.tables)
