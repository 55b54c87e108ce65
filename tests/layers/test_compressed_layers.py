"""QREmbedding, HashingEmbedding and HashedMemoryEmbedding on the current
backend (.ci/run runs tests/layers again under JAX and PyTorch),
checked against numpy references built from their weights."""

import math

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
from keras_mixed_dim.layers.hashing_embedding import HashingEmbedding
from keras_mixed_dim.layers.qr_embedding import EMBEDDING_STD
from keras_mixed_dim.layers.qr_embedding import QREmbedding

BACKEND = keras.backend.backend()
N, D = 300, 8


def random_signatures(n=N, size=4, seed=0):
    rng = np.random.default_rng(seed)
    # few distinct values per column, so some ids share signature entries
    return rng.integers(0, 5, size=(n, size)).astype("int32")


FACTORIES = {
    "qr_mult": lambda **kw: QREmbedding(N, D, **kw),
    "qr_add": lambda **kw: QREmbedding(N, D, num_collisions=7, operation="add", **kw),
    "qr_concat": lambda **kw: QREmbedding(N, 7, operation="concat", **kw),
    "hashing_mod": lambda **kw: HashingEmbedding(N, D, 37, **kw),
    "hashing_universal": lambda **kw: HashingEmbedding(N, D, 37, hash="universal",
                                                       seed=3, **kw),
    "robe": lambda **kw: HashedMemoryEmbedding(N, D, 101, chunk_size=4, **kw),
    "robe_signed": lambda **kw: HashedMemoryEmbedding(N, 6, 64, chunk_size=4,
                                                      signed=True, seed=5, **kw),
    "lsh": lambda **kw: HashedMemoryEmbedding(N, D, 97, hash="lsh",
                                              signatures=random_signatures(),
                                              hashes_per_element=2, **kw),
    "lsh_head": lambda **kw: HashedMemoryEmbedding(N, D, 97, hash="lsh",
                                                   signatures=random_signatures(50),
                                                   hashes_per_element=1, seed=2, **kw),
    "identity": lambda **kw: HashedMemoryEmbedding(N, D, N * D, hash="identity",
                                                   chunk_size=2, **kw),
}


def reference(layer, ids):
    """Numpy vectors of `ids` from the layer's weights (zeros when invalid)."""
    ids = np.asarray(ids)
    valid = (ids >= 0) & (ids < layer.input_dim)
    safe = np.where(valid, ids, 0).astype(np.int64)
    if isinstance(layer, QREmbedding):
        q = ops.convert_to_numpy(layer.quotient_embeddings)[safe // layer.num_collisions]
        r = ops.convert_to_numpy(layer.remainder_embeddings)[safe % layer.num_collisions]
        out = {"mult": lambda: q * r, "add": lambda: q + r,
               "concat": lambda: np.concatenate([q, r], -1)}[layer.operation]()
    elif isinstance(layer, HashingEmbedding):
        if layer.hash == "mod":
            rows = safe % layer.num_buckets
        else:
            rows = hashes.buckets_numpy(safe[..., None], hashes.HashParams(layer.seed),
                                        layer.num_buckets)
        out = ops.convert_to_numpy(layer.embeddings)[rows]
    else:
        out = memory_reference(layer, safe)
    return np.where(valid[..., None], out, 0.0).astype(np.float32)


def memory_reference(layer, safe, memory=None):
    """`M[(h(key(v, j // Z)) + j % Z) mod memory_size]` written out in numpy."""
    z, d, size = layer.chunk_size, layer.output_dim, layer.memory_size
    chunks = -(-d // z)
    salts = hashes.random_salts(layer.seed, chunks)
    if layer.hash == "identity":
        base = (safe[..., None] * d + np.arange(chunks) * z) % size
        sign = np.ones(base.shape, np.float32)
    else:
        if layer.hash == "lsh":
            table = ops.convert_to_numpy(layer.signatures)
            sig = table[np.minimum(safe, len(table) - 1)]  # (..., L)
            sig = np.where((safe < len(table))[..., None], sig, safe[..., None])
            keys = sig[..., layer._subsets]  # (..., chunks, k)
            params = hashes.HashParams(layer.seed, layer.hashes_per_element)
        else:
            keys = np.broadcast_to(safe[..., None, None], safe.shape + (chunks, 1))
            params = hashes.HashParams(layer.seed, 1)
        base = hashes.buckets_numpy(keys, params, size, salts)
        sign = hashes.signs_numpy(keys, params, salts)
    j = np.arange(d)
    locations = (base[..., j // z] + j % z) % size
    if memory is None:
        memory = ops.convert_to_numpy(layer.memory)
    out = memory[locations]
    if layer.signed:
        out = out * sign[..., j // z]
    return out


@pytest.fixture(params=sorted(FACTORIES))
def kind(request):
    return request.param


def make(kind, **kwargs):
    layer = FACTORIES[kind](**kwargs)
    layer.build()
    return layer


def test_outputs_match_numpy_reference(kind):
    layer = make(kind)
    ids = np.random.default_rng(0).integers(0, N, size=(20, 3))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(ids)), reference(layer, ids),
                               atol=1e-7)
    flat = np.arange(N)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(flat)),
                               reference(layer, flat), atol=1e-7)


def test_bad_ids_give_zeros_and_strings_are_rejected(kind):
    layer = make(kind)
    out = ops.convert_to_numpy(layer(np.array([-1, N, N - 1, 10**6, -N])))
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[[0, 1, 3, 4]], 0)
    assert np.any(out[2] != 0)
    big = ops.convert_to_numpy(layer(np.array([2**32 + 3, 3], dtype="int64")))
    np.testing.assert_array_equal(big[0], 0)
    np.testing.assert_allclose(big[1], reference(layer, [3])[0], atol=1e-7)
    floats = ops.convert_to_numpy(layer(np.array([1.5, np.nan, np.inf, 4.0])))
    np.testing.assert_array_equal(floats[:3], 0)
    np.testing.assert_allclose(floats[3], reference(layer, [4])[0], atol=1e-7)
    # backend tensors take the in-graph path
    tensor_out = ops.convert_to_numpy(layer(ops.convert_to_tensor(
        np.array([-3, 2, N], dtype="int32"))))
    np.testing.assert_array_equal(tensor_out[[0, 2]], 0)
    with pytest.raises(TypeError, match="integer ids"):
        layer(np.array(["a", "b"]))


@pytest.mark.parametrize("combiner", ["sum", "mean"])
def test_combiner_skips_padding_and_bad_ids(kind, combiner):
    layer = make(kind)
    bag = make(kind, combiner=combiner, mask_zero=True)
    bag.set_weights(layer.get_weights())
    ids = np.array([[5, 17, N - 1, 0], [0, 0, 0, 0], [3, -1, 7, N + 5]])
    per_id = reference(layer, ids)
    keep = (ids > 0) & (ids < N)
    expected = (per_id * keep[..., None]).sum(axis=1)
    if combiner == "mean":
        expected /= np.maximum(keep.sum(axis=1, keepdims=True), 1)
    out = ops.convert_to_numpy(bag(ids))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(out[1], 0)
    with pytest.raises(ValueError, match="bag axis"):
        bag.compute_output_shape((None,))


def test_mask_zero_gives_a_mask(kind):
    layer = make(kind, mask_zero=True)
    mask = layer.compute_mask(np.array([[0, 3, 0]]))
    np.testing.assert_array_equal(ops.convert_to_numpy(mask), [[False, True, False]])


def test_mixed_precision_keeps_weights_in_float32(kind):
    layer = make(kind, dtype="mixed_float16")
    out = layer(np.array([1, 2, N - 1]))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    for weight in layer.trainable_variables:
        assert weight.dtype == "float32"


def test_config_and_keras_file_round_trip(kind, tmp_path):
    layer = make(kind)
    clone = layer.__class__.from_config(layer.get_config())
    clone.build()
    clone.set_weights(layer.get_weights())
    ids = np.arange(-1, N + 1)
    np.testing.assert_array_equal(ops.convert_to_numpy(clone(ids)),
                                  ops.convert_to_numpy(layer(ids)))
    inputs = keras.Input(shape=(3,), dtype="int32")
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(layer(inputs)))
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    batch = np.random.default_rng(1).integers(0, N, size=(10, 3))
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(batch)),
                               ops.convert_to_numpy(model(batch)), atol=1e-6)


# On PyTorch `jit_compile=True` means torch.compile, which the layer contract
# does not promise (it promises XLA and jax.jit) and which takes up to 50 s
# per kind on 2 cores: there, one kind with the integer hash ops and one
# with plain gathers show the layers compile.
TORCH_COMPILED_KINDS = ("robe", "qr_add")


@pytest.mark.parametrize(
    "compiled_kind",
    TORCH_COMPILED_KINDS if BACKEND == "torch" else sorted(FACTORIES))
def test_jit_compiled_predict_matches_eager(compiled_kind):
    layer = make(compiled_kind)
    inputs = keras.Input(shape=(3,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(1)(
        keras.layers.Flatten()(layer(inputs))))
    model.compile(jit_compile=True)
    ids = np.random.default_rng(2).integers(-2, N + 2, size=(16, 3))
    np.testing.assert_allclose(model.predict(ids, verbose=0, batch_size=16),
                               ops.convert_to_numpy(model(ids)), atol=1e-5)


def gradients_of_sum(layer, ids):
    """Dense gradients of sum(layer(ids)) by weight name, on this backend."""
    names = [v.path.split("/")[-1] for v in layer.trainable_variables]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(ids))
        grads = tape.gradient(loss, layer.trainable_variables)
        return {n: tf.convert_to_tensor(g).numpy() for n, g in zip(names, grads)}
    if BACKEND == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        others = [v.value for v in layer.non_trainable_variables]
        def loss(values):
            out, _ = layer.stateless_call(values, others, ids)
            return out.sum()

        return {n: np.asarray(g) for n, g in zip(names, jax.grad(loss)(trainable))}
    if BACKEND == "torch":
        layer(ids).sum().backward()
        return {n: v.value.grad.cpu().numpy()
                for n, v in zip(names, layer.trainable_variables)}
    pytest.skip(f"no gradient helper for backend {BACKEND}")


def test_gradients_reach_only_the_looked_up_entries(kind):
    layer = make(kind)
    ids = np.array([[1, 2], [N - 1, 1], [-1, N + 3]])
    grads = gradients_of_sum(layer, ids)
    valid = ids[(ids >= 0) & (ids < N)]
    if isinstance(layer, QREmbedding):
        m = layer.num_collisions
        touched = {"quotient_embeddings": set(valid // m),
                   "remainder_embeddings": set(valid % m)}
    elif isinstance(layer, HashingEmbedding):
        rows = reference_rows(layer, valid)
        touched = {"embeddings": set(rows)}
    else:
        memory = np.arange(layer.memory_size, dtype=np.float32)
        # with M = arange, the reference returns the location of each element
        locations = memory_reference(_unsigned(layer), valid, memory).astype(int)
        touched = {"memory": set(locations.ravel())}
    for name, rows in touched.items():
        grad = grads[name]
        for row in range(grad.shape[0]):
            if row in rows:
                assert np.any(grad[row] != 0), (name, row)
            else:
                assert np.all(grad[row] == 0), (name, row)


def _unsigned(layer):
    clone = layer.__class__.from_config({**layer.get_config(), "signed": False})
    clone.build()
    clone.set_weights(layer.get_weights())
    return clone


def reference_rows(layer, ids):
    if layer.hash == "mod":
        return ids % layer.num_buckets
    return hashes.buckets_numpy(ids[:, None], hashes.HashParams(layer.seed),
                                layer.num_buckets)


# ---------------------------------------------------------------- QR specifics


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


# ---------------------------------------------------------- hashed specifics


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
