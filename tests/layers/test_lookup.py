"""Bags of ids on every table layer (the bag rule of layers/lookup.py):
each combiner, with and without per-id weights, against numpy references
built from the layer's own single-id outputs (.ci/run runs tests/layers
under TensorFlow, JAX and PyTorch)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.compress import quantize_layer
from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.layers.hashed_memory_embedding import HashedMemoryEmbedding
from keras_mixed_dim.layers.hashing_embedding import HashingEmbedding
from keras_mixed_dim.layers.qr_embedding import QREmbedding
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
from keras_mixed_dim.planning import plan_blocks

BACKEND = keras.backend.backend()
N, D = 40, 4
COMBINERS = ("sum", "mean", "sqrtn")
COUNTS = np.random.default_rng(7).integers(0, 50, N)

# bags of 4: an ordinary bag, repeated ids, an empty bag, an all-invalid one
# (out of range both ways), one with a zero and a negative weight
IDS = np.array([[3, 17, -1, 39],
                [5, 5, 5, 2],
                [-1, -1, -1, -1],
                [N, -7, N + 5, -1],
                [0, 8, 11, 30]], dtype="int32")
WEIGHTS = np.array([[0.5, 2.0, np.nan, 1.5],
                    [1.0, 0.25, 3.0, 2.0],
                    [np.nan, 1.0, 1.0, 1.0],
                    [1.0, 1.0, 1.0, np.inf],
                    [0.0, -1.0, 0.75, 1.25]], dtype="float32")


def coefficients(ids, weights, combiner, input_dim=N):
    """Numpy: the factor of each id's vector in its bag's vector."""
    valid = (ids >= 0) & (ids < input_dim)
    weights = np.ones(ids.shape, "float64") if weights is None else weights.astype("float64")
    keep = valid if combiner == "sum" else valid & (weights > 0)
    with np.errstate(invalid="ignore"):
        c = np.where(keep, weights, 0.0)
    if combiner == "sum":
        return c
    total = c.sum(-1) if combiner == "mean" else np.sqrt((c ** 2).sum(-1))
    return c / np.where(total > 0, total, 1.0)[..., None]


def numpy_bags(single, ids, weights, combiner, input_dim=N):
    """Bag vectors from single-id vectors `single` `(..., bag, d)`."""
    c = coefficients(ids, weights, combiner, input_dim)
    return np.einsum("...b,...bd->...d", c, single.astype("float64"))


def md(**kw):
    return MixedDimEmbedding(N, D, counts=COUNTS, num_blocks=3, alpha=0.5, **kw)


def md_qr(**kw):
    plan = plan_blocks(N, D, num_blocks=2, alpha=0.4, qr_min_rows=8)
    return MixedDimEmbedding(N, D, plan=plan, **kw)


def quantized(**kw):
    layer = md(**kw)
    layer.build()
    return quantize_layer(layer, "int8")


FACTORIES = {
    "md": md,
    "md_qr": md_qr,
    "quantized_md": quantized,
    "qr": lambda **kw: QREmbedding(N, D, num_collisions=6, **kw),
    "hashing": lambda **kw: HashingEmbedding(N, D, 13, hash="universal", **kw),
    "robe": lambda **kw: HashedMemoryEmbedding(N, D, 37, chunk_size=2, signed=True,
                                               **kw),
}


def twin(layer, combiner):
    """The same layer (same weights) with another combiner."""
    config = dict(layer.get_config(), combiner=combiner)
    other = type(layer).from_config(config)
    other.build()
    other.set_weights(layer.get_weights())
    return other


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_every_combiner_with_and_without_weights_matches_single_ids(kind):
    layer = FACTORIES[kind](combiner="sum")
    layer.build()
    single = ops.convert_to_numpy(twin(layer, None)(IDS))
    for combiner in COMBINERS:
        bagged = twin(layer, combiner)
        for weights in (None, WEIGHTS):
            out = bagged(IDS) if weights is None else bagged(IDS, weights=weights)
            out = ops.convert_to_numpy(out)
            assert out.shape == (len(IDS), D)
            assert np.all(np.isfinite(out)), (combiner, weights is not None)
            np.testing.assert_allclose(
                out, numpy_bags(single, IDS, weights, combiner), atol=1e-6,
                err_msg=f"{combiner}, weights={weights is not None}")
            # the empty and the all-invalid bags are zeros
            assert not np.any(out[2:4])


def stacked_layer(combiner, bag_sizes=(3, 1, 4)):
    plans = [plan_blocks(30, D, counts=COUNTS[:30], num_blocks=2, alpha=0.5,
                         remap=True), 12, plan_blocks(N, D, num_blocks=3, alpha=0.4)]
    return StackedEmbedding(plans, D, bag_sizes=list(bag_sizes), combiner=combiner)


STACKED_IDS = np.array([[1, 2, -1, 5, 0, 39, 39, -1],
                        [-1, -1, -1, 11, -1, -1, -1, -1],
                        [29, 30, 4, 12, 39, 38, 0, 1]], dtype="int32")
STACKED_WEIGHTS = np.array([[0.5, 2.0, np.nan, 3.0, 1.0, 0.5, 0.25, 1.0],
                            [1.0, 1.0, 1.0, -2.0, 1.0, 1.0, 1.0, 1.0],
                            [1.5, 1.0, 0.0, 1.0, -1.0, 2.0, 1.0, 0.5]], dtype="float32")


def test_stacked_bags_match_single_ids_of_the_same_layer():
    layer = stacked_layer("sum")
    layer.build()
    one_id = StackedEmbedding.from_config(
        dict(layer.get_config(), bag_sizes=None, combiner="sum"))
    one_id.build()
    one_id.set_weights(layer.get_weights())
    feature_of = np.repeat(np.arange(3), layer.bag_sizes)
    dims = layer.input_dims[feature_of]
    # single-id vectors: each column alone in its feature's slot
    single = np.zeros(STACKED_IDS.shape + (D,))
    for column, feature in enumerate(feature_of):
        ids = np.full((len(STACKED_IDS), 3), -1, "int32")
        ids[:, feature] = STACKED_IDS[:, column]
        single[:, column] = ops.convert_to_numpy(one_id(ids))[:, feature]
    starts = np.concatenate([[0], np.cumsum(layer.bag_sizes)])
    for combiner in COMBINERS:
        bagged = StackedEmbedding.from_config(dict(layer.get_config(), combiner=combiner))
        bagged.build()
        bagged.set_weights(layer.get_weights())
        for weights in (None, STACKED_WEIGHTS):
            out = ops.convert_to_numpy(
                bagged(STACKED_IDS) if weights is None
                else bagged(STACKED_IDS, weights=weights))
            assert out.shape == (len(STACKED_IDS), 3, D)
            for f in range(3):
                cols = slice(starts[f], starts[f + 1])
                expected = numpy_bags(
                    single[:, cols], STACKED_IDS[:, cols],
                    None if weights is None else weights[:, cols], combiner,
                    input_dim=dims[cols][:, None].T)
                np.testing.assert_allclose(out[:, f], expected, atol=1e-6,
                                           err_msg=f"{combiner} feature {f}")
    assert not np.any(out[1, [0, 2]])


def test_a_bag_of_100_ids():
    rng = np.random.default_rng(0)
    ids = rng.integers(-5, N + 5, (2, 100)).astype("int32")
    weights = rng.uniform(-0.5, 2.0, (2, 100)).astype("float32")
    layer = md(combiner="sqrtn")
    layer.build()
    single = ops.convert_to_numpy(twin(layer, None)(ids))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(ids, weights=weights)),
                               numpy_bags(single, ids, weights, "sqrtn"), atol=1e-5)
    stacked = StackedEmbedding([N, 30], D, bag_sizes=[100, 1], combiner="mean")
    stacked.build()
    table = ops.convert_to_numpy(stacked.tables[0])[:N]
    both = np.concatenate([ids, np.full((2, 1), -1, "int32")], axis=1)
    out = ops.convert_to_numpy(stacked(both, weights=np.concatenate(
        [weights, np.ones((2, 1), "float32")], axis=1)))
    valid = (ids >= 0) & (ids < N)
    single = np.where(valid[..., None], table[np.clip(ids, 0, N - 1)], 0.0)
    np.testing.assert_allclose(out[:, 0], numpy_bags(single, ids, weights, "mean"),
                               atol=1e-5)


def gradients(layer, ids, weights, upstream):
    """Gradients of `sum(layer(ids, weights=weights) * upstream)` with respect
    to the layer's trainable variables and to `weights`."""
    variables = layer.trainable_variables
    if BACKEND == "tensorflow":
        import tensorflow as tf

        w = tf.constant(weights)
        with tf.GradientTape() as tape:
            tape.watch(w)
            loss = tf.reduce_sum(layer(ids, weights=w) * upstream)
        grads = tape.gradient(loss, [*variables, w])
        return [tf.convert_to_tensor(g).numpy() for g in grads]
    if BACKEND == "jax":
        import jax

        others = [v.value for v in layer.non_trainable_variables]

        def loss(values, w):
            out, _ = layer.stateless_call(values, others, ids, weights=w)
            return (out * upstream).sum()

        table_grads, weight_grads = jax.grad(loss, argnums=(0, 1))(
            [v.value for v in variables], weights)
        return [np.asarray(g) for g in (*table_grads, weight_grads)]
    import torch

    w = torch.tensor(weights, requires_grad=True)
    (layer(ids, weights=w) * torch.tensor(upstream)).sum().backward()
    return [v.value.grad.cpu().numpy() for v in variables] + [w.grad.numpy()]


@pytest.mark.parametrize("combiner", COMBINERS)
@pytest.mark.parametrize("stacked", [False, True], ids=["md", "stacked"])
def test_gradients_with_respect_to_table_and_weights(combiner, stacked):
    ids = IDS[:, :3]
    weights = np.nan_to_num(WEIGHTS[:, :3], nan=1.0, posinf=1.0)
    upstream = np.random.default_rng(1).normal(size=(len(ids), D)).astype("float32")
    if stacked:
        layer = StackedEmbedding([N], D, bag_sizes=[3], combiner=combiner)
        upstream_out = upstream[:, None]
    else:
        layer = MixedDimEmbedding(N, D, num_blocks=1, alpha=0.0, combiner=combiner)
        upstream_out = upstream
    layer.build()
    table_grad, weight_grad = gradients(layer, ids, weights, upstream_out)
    table = ops.convert_to_numpy(layer.trainable_variables[0]).astype("float64")
    c = coefficients(ids, weights, combiner)
    expected_table = np.zeros((N, D))
    for b, j in zip(*np.nonzero(c)):
        expected_table[ids[b, j]] += c[b, j] * upstream[b]
    np.testing.assert_allclose(table_grad, expected_table, atol=1e-6)
    # d out / d w_j, by hand: x_j for sum; (x_j - out) / sum(w) for mean;
    # x_j / n - out w_j / n**2 with n = sqrt(sum(w**2)) for sqrtn
    valid = (ids >= 0) & (ids < N)
    x = np.where(valid[..., None], table[np.clip(ids, 0, N - 1)], 0.0)
    keep = valid if combiner == "sum" else valid & (weights > 0)
    out = np.einsum("bj,bjd->bd", c, x)
    expected_weights = np.zeros(ids.shape)
    for b, j in zip(*np.nonzero(keep)):
        w = np.where(keep[b], weights[b], 0.0)
        if combiner == "sum":
            dw = x[b, j]
        elif combiner == "mean":
            dw = (x[b, j] - out[b]) / w.sum()
        else:
            n = np.sqrt((w ** 2).sum())
            dw = x[b, j] / n - out[b] * weights[b, j] / n ** 2
        expected_weights[b, j] = dw @ upstream[b]
    np.testing.assert_allclose(weight_grad, expected_weights, atol=1e-6)
    assert np.all(np.isfinite(weight_grad))


def test_weights_need_a_combiner_and_the_ids_shape():
    with pytest.raises(ValueError, match="combiner=None"):
        md()(IDS, weights=WEIGHTS)
    with pytest.raises(ValueError, match="shape of the ids"):
        md(combiner="sum")(IDS, weights=WEIGHTS[:, :2])
    with pytest.raises(ValueError, match="combiner"):
        QREmbedding(N, D, combiner="max")
    with pytest.raises(ValueError, match="shape of the ids"):
        stacked_layer("sum")(STACKED_IDS, weights=STACKED_WEIGHTS[:, :3])


def test_functional_model_with_weights_input_round_trips(tmp_path):
    ids = keras.Input(shape=(4,), dtype="int32")
    weights = keras.Input(shape=(4,), dtype="float32")
    vector = md(combiner="mean", name="bag")(ids, weights=weights)
    model = keras.Model([ids, weights], vector)
    expected = ops.convert_to_numpy(model([IDS, WEIGHTS]))
    path = tmp_path / "bags.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded([IDS, WEIGHTS])), expected,
                               atol=1e-6)
    assert loaded.get_layer("bag").combiner == "mean"
