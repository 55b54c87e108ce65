"""QREmbedding on the current backend, against numpy references built
from its weights."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.layers.qr_embedding import EMBEDDING_STD
from keras_mixed_dim.layers.qr_embedding import QREmbedding
from tests.layers import compressed_contract as contract


# The shared contract, over this layer's kinds.
test_outputs_match_numpy_reference = contract.test_outputs_match_numpy_reference
test_bad_ids_give_zeros_and_strings_are_rejected = (
    contract.test_bad_ids_give_zeros_and_strings_are_rejected)
test_combiner_skips_padding_and_bad_ids = contract.test_combiner_skips_padding_and_bad_ids
test_mask_zero_gives_a_mask = contract.test_mask_zero_gives_a_mask
test_mixed_precision_keeps_weights_in_float32 = (
    contract.test_mixed_precision_keeps_weights_in_float32)
test_config_and_keras_file_round_trip = contract.test_config_and_keras_file_round_trip
test_gradients_reach_only_the_looked_up_entries = (
    contract.test_gradients_reach_only_the_looked_up_entries)


@pytest.fixture(params=["qr_add", "qr_concat", "qr_mult"])
def kind(request):
    return request.param



@pytest.mark.parametrize("n,m", [(1, 1), (10, 3), (1000, 32), (1001, 1001), (97, 10)])
def test_qr_pairs_are_distinct_and_tables_minimal(n, m):
    layer = QREmbedding(n, 4, num_collisions=m)
    ids = np.arange(n)
    pairs = set(zip(ids // m, ids % m))
    assert len(pairs) == n
    assert layer.quotient_shape[0] == math.ceil(n / m)
    assert layer.remainder_shape[0] == m
    assert max(q for q, _ in pairs) == layer.quotient_shape[0] - 1


def test_qr_default_collisions_is_ceil_sqrt():
    for n in (1, 2, 15, 16, 17, 10**6, 10**6 + 1):
        assert QREmbedding(n, 4).num_collisions == math.ceil(math.sqrt(n))


def test_qr_with_one_collision_and_unit_remainder_is_an_embedding():
    table = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
    layer = QREmbedding(50, 4, num_collisions=1)
    layer.build()
    layer.quotient_embeddings.assign(table)
    layer.remainder_embeddings.assign(np.ones((1, 4), "float32"))
    plain = keras.layers.Embedding(50, 4)
    plain.build()
    plain.embeddings.assign(table)
    ids = np.random.default_rng(1).integers(0, 50, size=(8, 5))
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(ids)),
                                  ops.convert_to_numpy(plain(ids)))


@pytest.mark.parametrize("operation", ["mult", "add", "concat"])
def test_qr_init_has_the_scale_of_a_standard_embedding(operation):
    layer = QREmbedding(40_000, 16, operation=operation)
    vectors = ops.convert_to_numpy(layer(np.arange(0, 40_000, 7)))
    assert abs(vectors.mean()) < 0.1 * EMBEDDING_STD
    assert 0.85 * EMBEDDING_STD < vectors.std() < 1.15 * EMBEDDING_STD


def test_qr_counts_and_errors():
    layer = QREmbedding(1000, 16, num_collisions=10)
    assert layer.params == 100 * 16 + 10 * 16 and layer.bytes == 4 * layer.params
    layer.build()
    assert layer.count_params() == layer.params
    concat = QREmbedding(1000, 7, num_collisions=10, operation="concat")
    assert concat.quotient_shape == (100, 4) and concat.remainder_shape == (10, 3)
    assert tuple(concat(np.array([1])).shape) == (1, 7)
    for bad in (0, 1001, 2.5, True):
        with pytest.raises(ValueError, match="num_collisions"):
            QREmbedding(1000, 4, num_collisions=bad)
    with pytest.raises(ValueError, match="operation"):
        QREmbedding(10, 4, operation="max")
    with pytest.raises(ValueError, match="input_dim"):
        QREmbedding(0, 4)
