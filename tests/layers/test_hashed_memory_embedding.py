"""HashedMemoryEmbedding (ROBE, LSH, identity layouts) and SharedMemory on the
current backend (.ci/run runs tests/layers again under JAX and PyTorch),
checked against numpy references built from their weights."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.layers import hashes
from keras_mixed_dim.layers.hashed_memory_embedding import HashedMemoryEmbedding
from keras_mixed_dim.layers.hashed_memory_embedding import SharedMemory
from keras_mixed_dim import embedding_bytes
from keras_mixed_dim.layers.hashed_memory_embedding import lsh_collision_probability
from keras_mixed_dim.layers.hashed_memory_embedding import lsh_signatures
from tests.layers import compressed_contract as contract
from tests.layers.compressed_contract import D
from tests.layers.compressed_contract import N


# The shared contract, over this layer's kinds (the jit test covers every kind).
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
test_jit_compiled_predict_matches_eager = contract.test_jit_compiled_predict_matches_eager


@pytest.fixture(params=["identity", "lsh", "lsh_head", "robe", "robe_signed"])
def kind(request):
    return request.param


def test_identity_layout_with_full_memory_equals_a_full_table():
    table = np.random.default_rng(0).normal(size=(N, D)).astype("float32")
    layer = HashedMemoryEmbedding(N, D, N * D, hash="identity", chunk_size=3)
    layer.build()
    layer.memory.assign(table.reshape(-1))  # row-major: element j of v at v*D + j
    plain = keras.layers.Embedding(N, D)
    plain.build()
    plain.embeddings.assign(table)
    ids = np.arange(N)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(ids)),
                                  ops.convert_to_numpy(plain(ids)))


def test_robe_slot_usage_is_close_to_uniform():
    n, size = 20_000, 1009
    layer = HashedMemoryEmbedding(n, 4, size, chunk_size=1)
    layer.build()
    layer.memory.assign(np.arange(size, dtype=np.float32))
    slots = ops.convert_to_numpy(layer(np.arange(n))).astype(int).ravel()
    observed = np.bincount(slots, minlength=size)
    expected = slots.size / size
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 1250, chi2  # 1008 degrees of freedom


def test_robe_chunks_are_contiguous():
    layer = HashedMemoryEmbedding(100, 8, 10_007, chunk_size=4)
    layer.build()
    layer.memory.assign(np.arange(10_007, dtype=np.float32))
    loc = ops.convert_to_numpy(layer(np.arange(100))).astype(int)
    np.testing.assert_array_equal(np.diff(loc[:, :4], axis=1) % 10_007, 1)
    np.testing.assert_array_equal(np.diff(loc[:, 4:], axis=1) % 10_007, 1)


def sets_with_jaccard(jaccard, size, rng, universe=2**30):
    """Two sets of `size` elements with |A & B| / |A | B| = jaccard."""
    shared = int(round(2 * size * jaccard / (1 + jaccard)))
    items = rng.choice(universe, size=2 * size - shared, replace=False)
    return items[:size], np.concatenate([items[:shared], items[size:]])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_lsh_collision_rate_follows_j_to_the_k(k):
    rng = np.random.default_rng(k)
    jaccards = [0.2, 0.5, 0.8]
    pairs, id_list, ctx_list = len(jaccards) * 40, [], []
    truth = []
    for p in range(pairs):
        j = jaccards[p % len(jaccards)]
        a, b = sets_with_jaccard(j, 60, rng)
        truth.append(len(np.intersect1d(a, b)) / len(np.union1d(a, b)))
        id_list += [np.full(a.size, 2 * p), np.full(b.size, 2 * p + 1)]
        ctx_list += [a, b]
    ids, contexts = np.concatenate(id_list), np.concatenate(ctx_list)
    # streaming in pieces gives the same signatures as one pass
    order = rng.permutation(ids.size)
    pieces = [(ids[order[i::3]], contexts[order[i::3]]) for i in range(3)]
    signatures = lsh_signatures(pieces, 2 * pairs, signature_size=8, seed=1)
    np.testing.assert_array_equal(
        signatures, lsh_signatures((ids, contexts), 2 * pairs, 8, seed=1))
    size = 1 << 20
    layer = HashedMemoryEmbedding(2 * pairs, 64, size, hash="lsh", chunk_size=1,
                                  signatures=signatures, hashes_per_element=k)
    layer.build()
    layer.memory.assign(np.arange(size, dtype=np.float32))
    loc = ops.convert_to_numpy(layer(np.arange(2 * pairs))).astype(int)
    same = (loc[0::2] == loc[1::2]).mean(axis=1)
    truth = np.array(truth)
    for j in jaccards:
        group = np.isclose(truth, j, atol=0.02)
        expected = lsh_collision_probability(truth[group].mean(), k, size)
        measured = same[group].mean()
        # 40 pairs x 64 elements: binomial-ish spread, plus minhash noise
        assert abs(measured - expected) < 0.08, (k, j, measured, expected)


def test_lsh_signatures_are_minhashes_of_each_set():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 20, size=500)
    contexts = rng.integers(0, 1000, size=500)
    signatures = lsh_signatures((ids, contexts), 25, signature_size=3, seed=4)
    params = hashes.HashParams(4, 1)
    salts = hashes.random_salts(4 ^ 0x3141, 3)
    for v in range(25):
        members = np.unique(contexts[ids == v])
        if members.size == 0:
            np.testing.assert_array_equal(signatures[v], v)
            continue
        values = hashes.hash_tuple_numpy(members[:, None, None], params, salts)
        expected = (values & np.uint64(0x7FFFFFFF)).min(axis=0)
        np.testing.assert_array_equal(signatures[v], expected)


def test_hashed_byte_counts_include_every_auxiliary_array():
    robe = HashedMemoryEmbedding(1000, 16, 500, chunk_size=4)
    assert robe.bytes == 4 * (500 + robe._params.num_constants + 4)
    lsh = HashedMemoryEmbedding(1000, 16, 500, hash="lsh", signature_size=3,
                                hashes_per_element=2)
    assert lsh.bytes == 4 * (500 + 1000 * 3 + lsh._params.num_constants + 16
                             + 16 * 2)
    lsh.build()
    assert lsh.count_params() == 500 + 1000 * 3


def test_shared_memory_is_one_pool_saved_once(tmp_path):
    pool = SharedMemory(211, name="pool")
    first = HashedMemoryEmbedding(100, 4, memory=pool, seed=1, name="first")
    second = HashedMemoryEmbedding(50, 4, memory=pool, hash="lsh", seed=2,
                                   name="second")
    inputs = keras.Input(shape=(2,), dtype="int32")
    vectors = keras.layers.Concatenate()([first(inputs[:, 0]), second(inputs[:, 1])])
    model = keras.Model(inputs, keras.layers.Dense(1)(vectors))
    memories = [w for w in model.weights if w.path.endswith("memory")]
    assert len(memories) == 1 and memories[0].shape == (211,)
    assert embedding_bytes([first, second]) == (
        211 * 4 + first.auxiliary_bytes + second.auxiliary_bytes)
    ids = np.random.default_rng(0).integers(0, 50, size=(32, 2))
    model.compile(optimizer="adam", loss="mse")
    model.fit(ids, np.ones((32, 1)), epochs=1, verbose=0)
    model.save(tmp_path / "shared.keras")
    loaded = keras.models.load_model(tmp_path / "shared.keras")
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(ids)),
                               ops.convert_to_numpy(model(ids)), atol=1e-6)
    loaded_memories = [w for w in loaded.weights if w.path.endswith("memory")]
    assert len(loaded_memories) == 1
    # both loaded features still read the one pool
    loaded_memories[0].assign(np.zeros(211, np.float32))
    a = loaded.get_layer("first")
    b = loaded.get_layer("second")
    pool_out = loaded.get_layer("pool")(ids[:, 0])
    np.testing.assert_array_equal(
        ops.convert_to_numpy(a(ids[:, 0], memory=pool_out)), 0)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(b(ids[:, 1], memory=pool_out)), 0)
    with pytest.raises(ValueError, match="shared memory"):
        HashedMemoryEmbedding(10, 4, 20, shared_memory=True)(np.array([1]))


def test_hashed_errors():
    with pytest.raises(ValueError, match="hash"):
        HashedMemoryEmbedding(10, 4, 20, hash="md5")
    with pytest.raises(ValueError, match="memory_size"):
        HashedMemoryEmbedding(10, 4, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        HashedMemoryEmbedding(10, 4, 20, chunk_size=5)
    with pytest.raises(ValueError, match="signatures"):
        HashedMemoryEmbedding(10, 4, 20, hash="lsh", signatures=np.zeros((11, 2)))
    with pytest.raises(ValueError, match="hashes_per_element"):
        HashedMemoryEmbedding(10, 4, 20, hash="lsh", signature_size=2,
                              hashes_per_element=3)
    with pytest.raises(ValueError, match="contexts"):
        lsh_signatures((np.array([1]), np.array([-4])), 10)
