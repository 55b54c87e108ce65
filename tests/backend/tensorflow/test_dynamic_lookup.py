"""TensorFlow's `DynamicEmbedding` lookup (dense reads of the small tables)
against the portable one (`DynamicEmbedding._vectors` on the variables,
the backend's lookup switched off) on the same inputs: outputs and every
variable's gradient, in a traced step, over layouts that put the pieces in
different variables, with stale tags, slots and buckets out of range,
padding, weighted bags and a diverged row; the gradients' form (dense, or
`IndexedSlices` for a large table and a `SparseRowOptimizer`'s tables);
Keras's Adam from the dense gradients."""

import keras
import numpy as np
import pytest
from keras import ops

# the layers and batches of PyTorch's lookup tests: the same cases
from tests.backend.torch.test_dynamic_lookup import batch_of, make

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="a TensorFlow-only module")

# (tier widths, options): output_dim 4
LAYOUTS = [
    ((4, 2, 1), {"fallback": "qr"}),
    ((4, 2, 1), {"fallback": "hashing"}),
    ((2, 1), {"fallback": "qr"}),             # no full-width piece
    ((4,), {"fallback": "hashing"}),          # no projection at all
]


def gradients(layer, packed, upstream, weights=None):
    """The layer's outputs and each width table's gradient (as the tape
    gives it) of `sum(outputs * upstream)`, in a traced step."""
    import tensorflow as tf

    kwargs = {} if weights is None else {"weights": tf.constant(weights)}

    @tf.function
    def step(packed):
        with tf.GradientTape() as tape:
            outputs = layer(packed, **kwargs)
            loss = tf.reduce_sum(outputs * upstream)
        return outputs, tape.gradient(loss, [v.value for v in layer.width_tables])

    return step(tf.constant(packed))


def dense(result):
    outputs, grads = result
    return (ops.convert_to_numpy(outputs),
            [ops.convert_to_numpy(ops.convert_to_tensor(g)) for g in grads])


def assert_same(got, want):
    # the same segment sums in the same order: equal, not merely close
    np.testing.assert_array_equal(got[0], want[0])
    for g, w in zip(got[1], want[1]):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dims,options", LAYOUTS)
def test_outputs_and_gradients_equal_the_portable_path(portable, dims, options):
    import tensorflow as tf

    layer = make(dims, **options)
    rng = np.random.default_rng(0)
    packed = batch_of(layer, rng)
    upstream = rng.normal(size=(24, 4)).astype("float32")
    got = gradients(layer, packed, upstream)
    # the small tables' gradients are dense; the portable path's are slices
    assert all(isinstance(g, tf.Tensor) for g in got[1])
    want = portable(lambda: gradients(layer, packed, upstream))
    assert all(isinstance(g, tf.IndexedSlices) for g in want[1])
    got, want = dense(got), dense(want)
    assert_same(got, want)
    assert all(np.abs(g).sum() > 0 for g in got[1])
    np.testing.assert_array_equal(got[0][3], 0.0)


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_weighted_bags_equal_the_portable_path(portable, combiner):
    layer = make((4, 2, 1), combiner=combiner)
    rng = np.random.default_rng(1)
    packed = batch_of(layer, rng, shape=(6, 4))
    weights = rng.uniform(0.5, 2.0, (6, 4)).astype("float32")
    upstream = rng.normal(size=(6, 4)).astype("float32")
    got = dense(gradients(layer, packed, upstream, weights))
    assert got[0].shape == (6, 4)
    assert_same(got, dense(portable(lambda: gradients(layer, packed, upstream, weights))))


def test_a_diverged_row_no_id_reads_gives_the_portable_paths_values(portable):
    layer = make((4, 2, 1))
    rng = np.random.default_rng(9)
    packed = batch_of(layer, rng)
    offsets = layer.id_map.offsets
    unread = [s for s in range(int(offsets[1]), int(offsets[2]))
              if s not in set(packed[:, 0].tolist())]
    table = layer.width_tables[layer.layout.buffer["tier_1_embeddings"]]
    values = ops.convert_to_numpy(table).copy()
    values[layer.layout.start["tier_1_embeddings"] + unread[0] - int(offsets[1])] = np.inf
    table.assign(values)
    upstream = rng.normal(size=(24, 4)).astype("float32")
    got = dense(gradients(layer, packed, upstream))
    assert np.isfinite(got[0]).all() and all(np.isfinite(g).all() for g in got[1])
    assert_same(got, dense(portable(lambda: gradients(layer, packed, upstream))))


def test_a_large_table_and_a_row_optimizers_tables_keep_their_slices(monkeypatch):
    import tensorflow as tf

    from keras_mixed_dim.backend.tensorflow import dynamic_lookup
    from keras_mixed_dim.optimizers import SparseRowOptimizer

    layer = make((4, 2, 1))
    rng = np.random.default_rng(2)
    packed = batch_of(layer, rng)
    upstream = rng.normal(size=(24, 4)).astype("float32")
    sizes = [int(np.prod(v.shape)) for v in layer.width_tables]
    # only the variables above the bound keep an IndexedSlices gradient
    bound = sorted(sizes)[1]
    monkeypatch.setattr(dynamic_lookup, "DENSE_GRADIENT_ELEMENTS", bound)
    kinds = [isinstance(g, tf.IndexedSlices) for g in gradients(layer, packed, upstream)[1]]
    assert kinds == [n > bound for n in sizes]
    monkeypatch.undo()
    # a SparseRowOptimizer's row step needs the rows of each table it updates
    optimizer = SparseRowOptimizer("adam")
    optimizer.build(layer.trainable_variables)
    assert all(isinstance(g, tf.IndexedSlices)
               for g in gradients(layer, packed, upstream)[1])
    # (a weak reference: a replaced optimizer frees the tables again)
    del optimizer
    import gc

    gc.collect()
    assert all(isinstance(g, tf.Tensor) for g in gradients(layer, packed, upstream)[1])


@pytest.mark.parametrize("name", ["Adam", "Adagrad", "RMSprop"])
def test_adam_steps_equal_adam_on_the_portable_paths_dense_gradients(portable, name):
    # Keras's Adam on TensorFlow squares each occurrence of a repeated row
    # in an IndexedSlices instead of the row's summed gradient (so do its
    # other optimizers that square the gradient); from the dense gradient
    # it runs Adam itself, as on JAX and PyTorch
    import tensorflow as tf

    def train(layer, packed, upstream, densify):
        optimizer = getattr(keras.optimizers, name)(0.05)
        for _ in range(2):
            grads = gradients(layer, packed, upstream)[1]
            # (`keras.ops.convert_to_tensor` keeps an IndexedSlices)
            optimizer.apply([tf.convert_to_tensor(g) for g in grads] if densify else grads,
                            layer.width_tables)
        return [ops.convert_to_numpy(v) for v in layer.width_tables]

    rng = np.random.default_rng(4)
    upstream = rng.normal(size=(24, 4)).astype("float32")
    layer = make((4, 2, 1))
    packed = batch_of(layer, rng)
    reference = make((4, 2, 1))
    batch_of(reference, np.random.default_rng(4))
    got = train(layer, packed, upstream, densify=False)
    want = portable(lambda: train(reference, packed, upstream, densify=True))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
