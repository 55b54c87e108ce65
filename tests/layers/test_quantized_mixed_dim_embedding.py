"""QuantizedMixedDimEmbedding on the current backend: lookups dequantize the
stored int8 rows (by their per-row scales) or float16 rows, and equal a
numpy lookup of the dequantized tables (.ci/run runs tests/layers again
under JAX and PyTorch)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.compress import QuantizedMixedDimEmbedding
from keras_mixed_dim.planning import plan_blocks

ROWS, DIM = 3000, 16


def quantized_layer(table_dtype, seed=0):
    # alpha 0.1 gives head blocks projected before the lookup and tail ones after
    plan = plan_blocks(ROWS, DIM, num_blocks=4, alpha=0.1, remap=False)
    layer = QuantizedMixedDimEmbedding(ROWS, DIM, plan=plan, table_dtype=table_dtype)
    layer.build()
    assert 0 < layer._head_blocks < plan.num_blocks
    rng = np.random.default_rng(seed)
    tables = []
    for i, block in enumerate(plan.blocks):
        if table_dtype == "int8":
            q = rng.integers(-127, 128, size=(block.rows, block.dim)).astype(np.int8)
            scale = rng.uniform(50, 200, size=block.rows).astype(np.float32)
            layer.block_embeddings[i].assign(q)
            layer.block_scales[i].assign(scale)
            tables.append(q.astype(np.float64) / scale[:, None])
        else:
            half = rng.normal(size=(block.rows, block.dim)).astype(np.float16)
            layer.block_embeddings[i].assign(half)
            tables.append(half.astype(np.float64))
        projection = layer.block_projections[i]
        if projection is not None:
            tables[-1] = tables[-1] @ ops.convert_to_numpy(projection).astype(np.float64)
    return layer, tables


def reference(plan, tables, ids):
    out = np.zeros(ids.shape + (DIM,))
    for index in np.ndindex(ids.shape):
        i = int(ids[index])
        if 0 <= i < ROWS:
            b = int(plan.block_of_rank(i))
            out[index] = tables[b][i - plan.offsets[b]]
    return out


@pytest.mark.parametrize("table_dtype", ["int8", "float16"])
def test_lookups_equal_the_dequantized_tables(table_dtype):
    layer, tables = quantized_layer(table_dtype)
    assert all(keras.backend.standardize_dtype(t.dtype) == table_dtype
               for t in layer.block_embeddings)
    assert not layer.trainable_variables or all(
        "projection" in v.path for v in layer.trainable_variables)
    starts = [b.start for b in layer.plan.blocks]
    edges = starts + [s - 1 for s in starts[1:]] + [ROWS - 1, -1, ROWS, 2 * ROWS, -7]
    sample = np.random.default_rng(1).integers(0, ROWS, 76 - len(edges))
    ids = np.concatenate([edges, sample]).reshape(-1, 4)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(ids)),
                               reference(layer.plan, tables, ids), rtol=1e-5, atol=1e-6)


def test_config_round_trip_and_refusals():
    layer, _ = quantized_layer("int8")
    clone = QuantizedMixedDimEmbedding.from_config(layer.get_config())
    assert clone.table_dtype == "int8" and clone.plan == layer.plan
    with pytest.raises(ValueError, match="table_dtype"):
        QuantizedMixedDimEmbedding(ROWS, DIM, table_dtype="int4")
    with pytest.raises(ValueError, match="does not count frequencies"):
        QuantizedMixedDimEmbedding(ROWS, DIM, count_frequencies=True)
    with pytest.raises(ValueError, match="re-plan the float layer"):
        layer.rebuild(layer.plan, np.arange(ROWS))
