"""The contract QREmbedding, HashingEmbedding and HashedMemoryEmbedding share
(numpy references built from their weights, ids outside [0, input_dim),
combiners, masks, mixed precision, saving, gradients). Not collected itself:
each layer's test file takes these tests with a `kind` fixture over its
own kinds."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.layers import hashes
from keras_mixed_dim.layers.hashed_memory_embedding import HashedMemoryEmbedding
from keras_mixed_dim.layers.hashing_embedding import HashingEmbedding
from keras_mixed_dim.layers.qr_embedding import QREmbedding
from tests.helpers import gradients_of_sum


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
    ids = np.arange(-1, N + 1)
    out = layer(ids)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    for weight in layer.trainable_variables:
        assert weight.dtype == "float32"
    # computed from the float32 weights, only the output cast: a layer that
    # read its tables as float16 (Keras's autocast) gives other roundings
    full = make(kind)
    full(ids)
    full.set_weights(layer.get_weights())
    np.testing.assert_array_equal(
        ops.convert_to_numpy(out),
        ops.convert_to_numpy(full(ids)).astype("float16"))


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
