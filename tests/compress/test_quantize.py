import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.compress import QuantizedMixedDimEmbedding
from keras_mixed_dim.compress import mixed_dim_from_embedding
from keras_mixed_dim.compress import quantize_layer
from keras_mixed_dim.compress import quantize_model
from keras_mixed_dim.compress import quantize_rows
from keras_mixed_dim.compress import weight_bytes

ROWS, DIM = 3000, 16


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
    assert weight_bytes(quantized) == expected
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
    np.testing.assert_allclose(new_model.predict(ids, verbose=0),
                               model.predict(ids, verbose=0), atol=0.05)
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
