"""Ragged and sparse bags on TensorFlow, and the bag rule against
`tf.nn.safe_embedding_lookup_sparse`."""

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip("TensorFlow only", allow_module_level=True)

import tensorflow as tf  # noqa: E402

from keras_mixed_dim.layers import MixedDimEmbedding  # noqa: E402
from keras_mixed_dim.layers.hashed_memory_embedding import HashedMemoryEmbedding  # noqa: E402
from keras_mixed_dim.layers.qr_embedding import QREmbedding  # noqa: E402
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding  # noqa: E402

N, D = 30, 4
ROWS = [[3, 7, 7, 29, 12], [], [N + 4, -2], [5]]
WEIGHTS = [[0.5, 2.0, 1.0, -1.0, 3.0], [], [1.0, 1.0], [0.25]]


def padded(rows, bag_size, pad):
    out = np.full((len(rows), bag_size), pad, dtype=np.asarray(pad).dtype)
    for i, row in enumerate(rows):
        row = row[:bag_size]  # the documented cut: a bag keeps its first ids
        out[i, :len(row)] = row
    return out


LAYERS = {
    "md": lambda c: MixedDimEmbedding(N, D, num_blocks=2, alpha=0.5, combiner=c,
                                      bag_size=3),
    "qr": lambda c: QREmbedding(N, D, combiner=c, bag_size=3),
    "robe": lambda c: HashedMemoryEmbedding(N, D, 40, combiner=c, bag_size=3),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_ragged_and_sparse_bags_equal_the_padded_ones_cut_to_bag_size(kind):
    layer = LAYERS[kind]("sqrtn")
    ids = tf.ragged.constant(ROWS, dtype=tf.int32)
    weights = tf.ragged.constant(WEIGHTS, dtype=tf.float32)
    expected = layer(padded(ROWS, 3, np.int32(-1)),
                     weights=padded(WEIGHTS, 3, np.float32(0))).numpy()
    np.testing.assert_allclose(layer(ids, weights=weights).numpy(), expected, atol=1e-7)
    np.testing.assert_allclose(
        layer(ids.to_sparse(), weights=weights.to_sparse()).numpy(), expected, atol=1e-7)
    # without weights, and through a compiled (XLA) function
    unweighted = layer(padded(ROWS, 3, np.int32(-1))).numpy()

    @tf.function(jit_compile=True)
    def compiled(values, lengths):
        return layer(tf.RaggedTensor.from_row_lengths(values, lengths))

    np.testing.assert_allclose(compiled(ids.values, ids.row_lengths()).numpy(),
                               unweighted, atol=1e-6)
    assert not np.any(expected[1:3])


def test_functional_model_on_ragged_input():
    layer = LAYERS["md"]("mean")
    ids = keras.Input(shape=(None,), ragged=True, dtype="int32")
    model = keras.Model(ids, layer(ids))
    ragged = tf.ragged.constant(ROWS, dtype=tf.int32)
    np.testing.assert_allclose(model(ragged).numpy(),
                               layer(padded(ROWS, 3, np.int32(-1))).numpy(), atol=1e-7)


def test_ragged_needs_a_bag_size_and_matching_weights():
    layer = MixedDimEmbedding(N, D, num_blocks=1, combiner="sum")
    with pytest.raises(ValueError, match="bag_size"):
        layer(tf.ragged.constant(ROWS))
    layer = LAYERS["md"]("sum")
    with pytest.raises(ValueError, match="both be ragged"):
        layer(tf.ragged.constant(ROWS), weights=padded(WEIGHTS, 3, np.float32(0)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="row lengths"):
        layer(tf.ragged.constant(ROWS), weights=tf.ragged.constant([[1.0]] * 4))


@pytest.mark.parametrize("kind", ["md", "qr"])
def test_ragged_ids_need_a_combiner(kind):
    """As documented: ragged / sparse ids are bags; without a combiner the
    -1-padded per-id vectors would come back with no mask."""
    layer = (MixedDimEmbedding(N, D, num_blocks=1, bag_size=3) if kind == "md"
             else QREmbedding(N, D, bag_size=3))
    with pytest.raises(ValueError, match="give the layer a combiner"):
        layer(tf.ragged.constant(ROWS))
    with pytest.raises(ValueError, match="give the layer a combiner"):
        layer(tf.ragged.constant(ROWS).to_sparse())
    ids = keras.Input(shape=(None,), ragged=True, dtype="int32")
    with pytest.raises(ValueError, match="give the layer a combiner"):
        layer(ids)


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_uniform_table_matches_safe_embedding_lookup_sparse(combiner):
    rows = [[3, 7, 7, 29, 12], [], [8, 2], [5], [1, 1]]
    weights = [[0.5, 2.0, 1.0, -1.0, 3.0], [], [0.0, -1.0], [0.25], [1.0, 2.0]]
    ids = tf.ragged.constant(rows, dtype=tf.int64)
    w = tf.ragged.constant(weights, dtype=tf.float32)
    layer = MixedDimEmbedding(N, D, num_blocks=1, alpha=0.0, combiner=combiner,
                              bag_size=5)
    stacked = StackedEmbedding([N], D, bag_sizes=[5], combiner=combiner)
    layer.build()
    stacked.build()
    stacked.tables[0].assign(layer.block_embeddings[0])
    table = layer.block_embeddings[0].value
    for weighted in (False, True):
        expected = tf.nn.safe_embedding_lookup_sparse(
            table, ids.to_sparse(), w.to_sparse() if weighted else None,
            combiner=combiner).numpy()
        kwargs = {"weights": w} if weighted else {}
        np.testing.assert_allclose(layer(ids, **kwargs).numpy(), expected, atol=1e-6)
        dense_kwargs = ({"weights": padded(weights, 5, np.float32(0))}
                        if weighted else {})
        np.testing.assert_allclose(
            stacked(padded(rows, 5, np.int64(-1)), **dense_kwargs).numpy()[:, 0],
            expected, atol=1e-6)


def test_sparse_bags_are_each_row_entries_in_column_order_wherever_they_sit():
    layer = LAYERS["md"]("mean")
    # entries at columns 4 and 1 of row 0 (given out of order), none in row 1
    sparse = tf.SparseTensor([[0, 4], [0, 1], [2, 7]], [17, 3, 9], [3, 8])
    weights = tf.SparseTensor([[0, 4], [0, 1], [2, 7]], [2.0, 0.5, 1.0], [3, 8])
    expected = layer(np.array([[3, 17], [-1, -1], [9, -1]]),
                     weights=np.array([[0.5, 2.0], [0, 0], [1.0, 0]], "float32"))
    np.testing.assert_allclose(layer(sparse, weights=weights).numpy(),
                               expected.numpy(), atol=1e-7)


def test_stacked_bags_compile_under_xla():
    layer = StackedEmbedding([100, 50, 20], 8, bag_sizes=[3, 1, 5], combiner="sqrtn")
    rng = np.random.default_rng(0)
    ids = rng.integers(-1, 20, (4, 9)).astype("int32")
    weights = rng.random((4, 9)).astype("float32")
    compiled = tf.function(lambda i, w: layer(i, weights=w), jit_compile=True)
    np.testing.assert_allclose(compiled(ids, weights).numpy(),
                               layer(ids, weights=weights).numpy(), atol=1e-6)


# Per-feature ids of a StackedEmbedding: feature 0 ragged (a bag of 5 cut to
# its first 3 ids, an empty bag, an invalid id), feature 1 one id per
# example, feature 2 bags of 2.
STACKED_SIZES = [3, 1, 2]
FEATURE_ROWS = [ROWS, [[4], [-1], [19], [0]], [[1, 2, 3], [7], [], [N - 1, 2]]]
FEATURE_WEIGHTS = [WEIGHTS, [[2.0], [1.0], [0.5], [3.0]],
                   [[1.0, 0.5, 9.0], [2.0], [], [0.25, 1.0]]]


def stacked_padded(rows, pad):
    return np.concatenate([padded(r, k, pad) for r, k in zip(rows, STACKED_SIZES)],
                          axis=1)


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_stacked_per_feature_ragged_and_sparse_equal_the_padded_ids(combiner):
    layer = StackedEmbedding([N, 20, N], D, bag_sizes=STACKED_SIZES, combiner=combiner)
    ids = [tf.ragged.constant(r, dtype=tf.int64) for r in FEATURE_ROWS]
    weights = [tf.ragged.constant(w, dtype=tf.float32) for w in FEATURE_WEIGHTS]
    dense_ids = stacked_padded(FEATURE_ROWS, np.int32(-1))
    expected = layer(dense_ids).numpy()
    expected_weighted = layer(
        dense_ids, weights=stacked_padded(FEATURE_WEIGHTS, np.float32(0))).numpy()
    assert not np.any(expected[1, 0]) and np.any(expected[0, 0])  # the empty bag
    sparse = [x.to_sparse() for x in ids]
    sparse_weights = [w.to_sparse() for w in weights]
    # one id per example of feature 1 also as a dense (batch,) vector
    mixed = [ids[0], np.array([r[0] for r in FEATURE_ROWS[1]]), sparse[2]]
    mixed_weights = [weights[0], None, sparse_weights[2]]
    for form, form_weights in ((ids, weights), (sparse, sparse_weights)):
        np.testing.assert_allclose(layer(form).numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(layer(form, weights=form_weights).numpy(),
                                   expected_weighted, atol=1e-6)
    names = layer.feature_names
    np.testing.assert_allclose(
        layer(dict(zip(names, mixed)), weights=dict(zip(names, mixed_weights))).numpy(),
        layer(dense_ids, weights=stacked_padded(
            [FEATURE_WEIGHTS[0], [[1.0]] * 4, FEATURE_WEIGHTS[2]], np.float32(0))).numpy(),
        atol=1e-6)


def test_stacked_per_feature_ragged_compiles_under_xla_and_in_a_functional_model():
    layer = StackedEmbedding([N, 20, N], D, bag_sizes=STACKED_SIZES, combiner="sqrtn")
    ids = [tf.ragged.constant(r, dtype=tf.int32) for r in FEATURE_ROWS]
    weights = [tf.ragged.constant(w, dtype=tf.float32) for w in FEATURE_WEIGHTS]
    expected = layer(stacked_padded(FEATURE_ROWS, np.int32(-1)),
                     weights=stacked_padded(FEATURE_WEIGHTS, np.float32(0))).numpy()

    @tf.function(jit_compile=True)
    def compiled(values, weight_values, lengths):
        def ragged(parts):
            return [tf.RaggedTensor.from_row_lengths(v, n) for v, n in zip(parts, lengths)]
        return layer(ragged(values), weights=ragged(weight_values))

    np.testing.assert_allclose(
        compiled([x.values for x in ids], [w.values for w in weights],
                 [x.row_lengths() for x in ids]).numpy(), expected, atol=1e-6)
    inputs = [keras.Input(shape=(None,), ragged=True, dtype="int32") for _ in ids]
    input_weights = [keras.Input(shape=(None,), ragged=True) for _ in ids]
    model = keras.Model([inputs, input_weights], layer(inputs, weights=input_weights))
    assert model.output.shape == (None, 3, D)
    np.testing.assert_allclose(model([ids, weights]).numpy(), expected, atol=1e-6)


def test_stacked_per_feature_ids_are_checked():
    layer = StackedEmbedding([N, 20], D, bag_sizes=[3, 2])
    ragged = tf.ragged.constant(ROWS)
    with pytest.raises(ValueError, match="2 features; its per-feature ids need 2"):
        layer([ragged])
    with pytest.raises(ValueError, match=r"feature 'stacked.*feature1'.*\(batch, 2\).*\(4, 3\)"):
        layer([ragged, np.zeros((4, 3), "int32")])
    with pytest.raises(ValueError, match="keyed by its feature names"):
        layer({"tags": ragged, "site": ragged})
    with pytest.raises(ValueError, match="`weights` must be per feature"):
        layer([ragged, ragged], weights=np.ones((4, 5), "float32"))
    with pytest.raises(ValueError, match="both be ragged"):
        layer([ragged, ragged], weights=[np.ones((4, 3), "float32"), None])
