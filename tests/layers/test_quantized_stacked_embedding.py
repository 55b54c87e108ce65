"""`QuantizedStackedEmbedding` against a numpy reference (every backend)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.compress import quantize_layer
from keras_mixed_dim.compress import quantize_rows
from keras_mixed_dim.layers.quantized_stacked_embedding import QuantizedStackedEmbedding
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan

DIM = 4


def float_layer():
    """A remapped MD feature (a full-width head, a projected tail), a plain
    feature, and another MD feature sharing the groups."""
    plans = [BlockPlan(40, DIM, [Block(0, 8, DIM), Block(8, 40, 2)], remapped=True),
             30,
             BlockPlan(20, DIM, [Block(0, 5, DIM), Block(5, 20, 2)])]
    layer = StackedEmbedding(plans, DIM, name="stacked")
    layer.build()
    rng = np.random.default_rng(0)
    for variable in layer.tables + [p for p in layer.projections if p is not None]:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    layer.remap.assign(np.concatenate([rng.permutation(40), np.arange(30),
                                       np.arange(20)]).astype("int32"))
    return layer


def reference(layer, ids, mode):
    """Per feature, its rows read from the float tables stored in `mode`."""
    out = np.zeros(ids.shape + (DIM,))
    for f in range(layer.num_features):
        tables, projections = layer.feature_weights(f)
        valid = (ids[:, f] >= 0) & (ids[:, f] < layer.input_dims[f])
        ranks = layer.feature_ranks(f)[np.where(valid, ids[:, f], 0)]
        for block, table, projection in zip(layer.plans[f].blocks, tables, projections):
            if mode == "int8":
                q, scale = quantize_rows(table)
                table = q / scale[:, None].astype(np.float64)
            else:
                table = table.astype(np.float16).astype(np.float64)
            if projection is not None:
                table = table @ projection
            member = valid & (ranks >= block.start) & (ranks < block.stop)
            out[member, f] = table[ranks[member] - block.start]
    return out


@pytest.mark.parametrize("mode", ["int8", "float16"])
def test_lookups_match_a_numpy_reference_and_round_trip(mode):
    layer = float_layer()
    quantized = quantize_layer(layer, mode)
    assert isinstance(quantized, QuantizedStackedEmbedding)
    ids = np.stack([np.arange(-1, 41), np.arange(42) % 31,
                    np.arange(42) % 22 - 1], axis=1).astype("int32")
    ids[0] = [-1, 30, 20]  # every feature out of range
    got = ops.convert_to_numpy(quantized(ids))
    np.testing.assert_allclose(got, reference(layer, ids, mode), atol=1e-5)
    np.testing.assert_array_equal(got[0], 0)
    assert not any(t.trainable for t in quantized.tables)
    copy = QuantizedStackedEmbedding.from_config(quantized.get_config())
    copy.build()
    copy.set_weights(quantized.get_weights())
    np.testing.assert_array_equal(ops.convert_to_numpy(copy(ids)), got)
    assert quantized.bytes == sum(
        int(np.prod(w.shape)) * np.dtype(keras.backend.standardize_dtype(w.dtype)).itemsize
        for w in quantized.weights)


def test_refuses_counting_replanning_and_unknown_dtypes():
    with pytest.raises(ValueError, match="does not count frequencies"):
        QuantizedStackedEmbedding([10], DIM, count_frequencies=[True])
    with pytest.raises(ValueError, match="table_dtype"):
        QuantizedStackedEmbedding([10], DIM, table_dtype="int4")
    quantized = quantize_layer(float_layer())
    with pytest.raises(ValueError, match="cannot be re-planned"):
        quantized.rebuild(quantized.plans, None)
