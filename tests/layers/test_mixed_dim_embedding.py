"""MixedDimEmbedding on the current Keras backend (TensorFlow by default;
test_backends.py runs this file again under JAX)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan
from keras_mixed_dim.planning import plan_blocks
from tests.helpers import counting_model
from tests.helpers import counts_of
from tests.helpers import gradients_of_sum
from tests.helpers import mixed_dim_outputs


BACKEND = keras.backend.backend()


def zipf_counts_shuffled(n, seed=0):
    rng = np.random.default_rng(seed)
    counts = np.floor(1e4 / np.arange(1, n + 1)).astype("int64")
    return counts[rng.permutation(n)]


@pytest.fixture
def layer():
    counts = zipf_counts_shuffled(500)
    layer = MixedDimEmbedding(500, 16, counts=counts, num_blocks=3, alpha=0.5)
    layer.build()
    return layer


def test_plan_and_weight_names(layer):
    assert layer.plan.remapped and layer.plan.num_blocks == 3
    names = [w.path.split("/")[-1] for w in layer.weights]
    assert "block_0_embeddings" in names and "remap" in names
    for i, block in enumerate(layer.plan.blocks):
        assert tuple(layer.block_embeddings[i].shape) == (block.rows, block.dim)
        if block.dim == 16:
            assert layer.block_projections[i] is None
            assert f"block_{i}_projection" not in names
        else:
            assert tuple(layer.block_projections[i].shape) == (block.dim, 16)


def test_each_block_is_its_row_times_its_projection(layer):
    ids = np.arange(500).reshape(25, 20)
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(ids)), mixed_dim_outputs(layer, ids), atol=1e-6
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(ids.reshape(-1))),
        mixed_dim_outputs(layer, ids.reshape(-1)),
        atol=1e-6,
    )


def test_remap_follows_the_counts(layer):
    counts = zipf_counts_shuffled(500)
    remap = ops.convert_to_numpy(layer.remap)
    # the most frequent id has rank 0 and lands in block 0
    assert remap[int(np.argmax(counts))] == 0
    sorted_counts = counts[np.argsort(remap)]
    assert np.all(np.diff(sorted_counts) <= 0)


def test_uniform_plan_equals_keras_embedding():
    table = np.random.default_rng(1).normal(size=(300, 8)).astype("float32")
    mixed = MixedDimEmbedding(300, 8, alpha=0.0, num_blocks=4)
    mixed.build()
    assert mixed.plan.dims == (8, 8, 8, 8)
    for i, block in enumerate(mixed.plan.blocks):
        mixed.block_embeddings[i].assign(table[block.start : block.stop])
    plain = keras.layers.Embedding(300, 8)
    plain.build()
    plain.embeddings.assign(table)
    ids = np.random.default_rng(2).integers(0, 300, size=(64, 5))
    np.testing.assert_array_equal(
        ops.convert_to_numpy(mixed(ids)), ops.convert_to_numpy(plain(ids))
    )


def test_uniform_plan_with_counts_equals_embedding_of_ranked_rows():
    counts = zipf_counts_shuffled(200, seed=3)
    mixed = MixedDimEmbedding(200, 4, counts=counts, alpha=0.0)
    mixed.build()
    table = np.random.default_rng(4).normal(size=(200, 4)).astype("float32")
    remap = ops.convert_to_numpy(mixed.remap)
    by_rank = np.empty_like(table)
    by_rank[remap] = table
    for i, block in enumerate(mixed.plan.blocks):
        mixed.block_embeddings[i].assign(by_rank[block.start : block.stop])
    ids = np.arange(200)
    np.testing.assert_array_equal(ops.convert_to_numpy(mixed(ids)), table)


@pytest.mark.parametrize("remapped", [False, True])
def test_out_of_range_ids_give_zeros_never_wrap(remapped):
    counts = zipf_counts_shuffled(50) if remapped else None
    layer = MixedDimEmbedding(50, 8, counts=counts, alpha=0.5,
                              embeddings_initializer="ones")
    ids = np.array([[-1, 49], [50, 0], [-50, 10**6]])
    out = ops.convert_to_numpy(layer(ids))
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[0, 0], 0)
    np.testing.assert_array_equal(out[1, 0], 0)
    np.testing.assert_array_equal(out[2], 0)
    assert np.any(out[0, 1] != 0) and np.any(out[1, 1] != 0)
    # int64 ids beyond int32 range do not wrap around either
    big = np.array([2**32 + 3, 3], dtype="int64")
    out = ops.convert_to_numpy(layer(big))
    np.testing.assert_array_equal(out[0], 0)
    assert np.any(out[1] != 0)


@pytest.mark.parametrize("combiner", ["sum", "mean"])
def test_combiner_reduces_the_bag_and_skips_padding(layer, combiner):
    bag_layer = MixedDimEmbedding(
        500, 16, plan=layer.plan, combiner=combiner, mask_zero=True
    )
    bag_layer.build()
    bag_layer.set_weights(layer.get_weights())
    ids = np.array([[5, 17, 499, 0], [0, 0, 0, 0], [3, -1, 7, 600]])
    per_id = mixed_dim_outputs(layer, ids)
    keep = (ids != 0) & (ids >= 0) & (ids < 500)
    expected = (per_id * keep[..., None]).sum(axis=1)
    if combiner == "mean":
        expected /= np.maximum(keep.sum(axis=1, keepdims=True), 1)
    out = ops.convert_to_numpy(bag_layer(ids))
    assert out.shape == (3, 16)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(out[1], 0)


def test_mask_zero_without_combiner_gives_a_mask():
    layer = MixedDimEmbedding(20, 4, mask_zero=True)
    mask = layer.compute_mask(np.array([[0, 3, 0]]))
    np.testing.assert_array_equal(ops.convert_to_numpy(mask), [[False, True, False]])


def test_output_shapes_and_errors():
    layer = MixedDimEmbedding(20, 4)
    assert layer.compute_output_shape((None, 3)) == (None, 3, 4)
    bag = MixedDimEmbedding(20, 4, combiner="sum")
    assert bag.compute_output_shape((None, 3)) == (None, 4)
    with pytest.raises(ValueError, match="bag axis"):
        bag.compute_output_shape((None,))
    with pytest.raises(ValueError, match="combiner"):
        MixedDimEmbedding(20, 4, combiner="max")
    with pytest.raises(ValueError, match="input_dim"):
        MixedDimEmbedding(0, 4)
    with pytest.raises(ValueError, match="output_dim"):
        MixedDimEmbedding(10, True)
    with pytest.raises(ValueError, match="plan is for"):
        MixedDimEmbedding(10, 4, plan=plan_blocks(11, 4))


def test_gradients_reach_only_the_looked_up_rows(layer):
    ids = np.array([[1, 2], [400, 1]])
    grads = gradients_of_sum(layer, ids)
    remap = ops.convert_to_numpy(layer.remap)
    touched = {int(remap[i]) for i in ids.ravel()}
    for b, block in enumerate(layer.plan.blocks):
        grad = grads[f"block_{b}_embeddings"]
        for row in range(block.rows):
            rank = block.start + row
            if rank in touched:
                assert np.any(grad[row] != 0), (b, row)
            else:
                assert np.all(grad[row] == 0), (b, row)


def model_with(layer, input_shape=(3,)):
    inputs = keras.Input(shape=input_shape, dtype="int32")
    x = layer(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1)(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_jit_compiled_predict_matches_eager(layer, batch):
    model = model_with(layer)
    model.compile(jit_compile=True)
    ids = np.random.default_rng(batch).integers(-2, 502, size=(batch, 3))
    np.testing.assert_allclose(
        model.predict(ids, verbose=0, batch_size=batch),
        ops.convert_to_numpy(model(ids)),
        atol=1e-5,
    )


def test_functional_model_trains_with_fit():
    rng = np.random.default_rng(0)
    counts = zipf_counts_shuffled(300, seed=5)
    ids = rng.choice(300, size=(2048, 3), p=counts / counts.sum())
    target = (np.sin(ids).sum(axis=1, keepdims=True)).astype("float32")
    layer = MixedDimEmbedding(300, 8, counts=counts, alpha=0.3)
    model = model_with(layer)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(ids, target, epochs=5, batch_size=128, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    # the remap is state, not a trainable weight: training must not touch it
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer.remap),
        MixedDimEmbedding(300, 8, counts=counts, alpha=0.3).plan.remapped
        and _ranks(counts),
    )


def _ranks(counts):
    order = np.argsort(-np.asarray(counts), kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)
    return ranks


def test_summary_counts_the_plans_parameters(layer):
    model = model_with(layer)
    assert layer.count_params() == layer.plan.params + layer.plan.remap_entries
    trainable = sum(int(np.prod(v.shape)) for v in layer.trainable_variables)
    assert trainable == layer.plan.params
    lines = []
    model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    assert f"{layer.plan.params + layer.plan.remap_entries:,}" in "\n".join(lines)


def test_mixed_precision_keeps_tables_in_float32():
    layer = MixedDimEmbedding(100, 8, dtype="mixed_float16")
    out = layer(np.array([1, 2, 99]))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    for weight in layer.trainable_variables:
        assert weight.dtype == "float32"


def test_config_round_trip(layer):
    config = layer.get_config()
    assert "counts" not in config
    clone = MixedDimEmbedding.from_config(config)
    clone.build()
    clone.set_weights(layer.get_weights())
    assert clone.plan == layer.plan
    ids = np.arange(-1, 501)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(clone(ids)), ops.convert_to_numpy(layer(ids))
    )


def test_keras_file_round_trip(layer, tmp_path):
    model = model_with(layer)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    ids = np.random.default_rng(0).integers(0, 500, size=(10, 3))
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded(ids)), ops.convert_to_numpy(model(ids))
    )
    loaded_layer = loaded.layers[1]
    assert isinstance(loaded_layer, MixedDimEmbedding)
    assert loaded_layer.plan == layer.plan
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded_layer.remap), ops.convert_to_numpy(layer.remap)
    )


def test_explicit_plan():
    plan = BlockPlan(10, 4, [Block(0, 2, 4), Block(2, 10, 1)])
    layer = MixedDimEmbedding(10, 4, plan=plan)
    out = layer(np.arange(10))
    assert tuple(out.shape) == (10, 4)
    assert layer.count_params() == 2 * 4 + 8 * 1 + 1 * 4


def reference_by_id(layer):
    """Every id's output vector from the layer's weights, in numpy (float64)."""
    plan = layer.plan
    by_rank = np.concatenate([
        ops.convert_to_numpy(t).astype("float64") @ (
            np.eye(plan.output_dim) if p is None
            else ops.convert_to_numpy(p).astype("float64"))
        for t, p in zip(layer.block_embeddings, layer.block_projections)
    ])
    if plan.remapped:
        return by_rank[ops.convert_to_numpy(layer.remap)]
    return by_rank


def reference_lookup(layer, ids, combiner=None, mask_zero=False):
    table = reference_by_id(layer)
    ids = np.asarray(ids)
    valid = (ids >= 0) & (ids < layer.input_dim)
    if mask_zero and combiner is not None:
        valid &= ids != 0
    out = np.where(valid[..., None], table[np.where(valid, ids, 0)], 0.0)
    if combiner is None:
        return out
    out = out.sum(axis=-2)
    if combiner == "mean":
        out /= np.maximum(valid.sum(axis=-1, keepdims=True), 1)
    return out


# Plans that exercise both lookup paths: small leading blocks are projected
# before the gather (the "head"), the rest gather first and project after.
GATHER_FIRST_PLANS = {
    # two head blocks, then two projected gather-first blocks (one matmul)
    "head+two_tail": ([100, 1000, 10000], [16, 8, 4, 2], 40_000, 2),
    # no head: a full-width gather-first block and two projected ones
    "no_head": ([5000, 20000], [16, 4, 2], 30_000, 0),
    # one projected gather-first block after a head
    "head+one_tail": ([50], [16, 3], 20_000, 1),
}


@pytest.mark.parametrize("name", sorted(GATHER_FIRST_PLANS))
@pytest.mark.parametrize("remapped", [False, True])
@pytest.mark.parametrize("combiner", [None, "sum", "mean"])
def test_both_lookup_paths_match_a_numpy_reference(name, remapped, combiner):
    boundaries, dims, input_dim, head = GATHER_FIRST_PLANS[name]
    offsets = [0, *boundaries, input_dim]
    plan = BlockPlan(input_dim, 16, [Block(a, b, d) for a, b, d in
                                     zip(offsets[:-1], offsets[1:], dims)],
                     remapped=remapped)
    counts = None
    if remapped:
        counts = np.random.default_rng(1).permutation(input_dim).astype("float64") + 1
    layer = MixedDimEmbedding(input_dim, 16, plan=plan, counts=counts,
                              combiner=combiner, mask_zero=combiner is not None,
                              embeddings_initializer="normal")
    layer.build()
    assert layer._head_blocks == head
    # every block edge, in rank space, plus invalid ids
    edge_ranks = sorted({r for o in offsets[1:-1] for r in (o - 1, o, o + 1)}
                        | {0, input_dim - 1})
    if remapped:
        order = np.argsort(ops.convert_to_numpy(layer.remap))
        edge_ids = order[edge_ranks]
    else:
        edge_ids = np.array(edge_ranks)
    ids = np.concatenate([edge_ids, [-1, input_dim, 0, 7]])
    ids = np.resize(ids, (len(ids) + (-len(ids)) % 4)).reshape(-1, 4)
    expected = reference_lookup(layer, ids, combiner, mask_zero=combiner is not None)
    out = ops.convert_to_numpy(layer(ids))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    if combiner is not None or remapped:
        return
    # and under a compiled predict (one case per plan keeps the suite short)
    inputs = keras.Input((4,), dtype="int32")
    model = keras.Model(inputs, layer(inputs))
    model.compile(jit_compile=BACKEND != "torch")
    np.testing.assert_allclose(model.predict(ids, verbose=0), expected,
                               rtol=1e-5, atol=1e-5)


def test_no_valid_id_reads_an_all_zero_row():
    # a skipped or mis-cut block shows up as valid ids with zero vectors
    layer = MixedDimEmbedding(40_000, 8, boundaries=[100, 1000, 10000], alpha=0.5,
                              embeddings_initializer="ones")
    out = ops.convert_to_numpy(layer(np.arange(40_000)))
    assert np.all(np.abs(out).sum(axis=1) > 0)


def test_bad_ids_behave_the_same_on_every_backend():
    layer = MixedDimEmbedding(10, 4, embeddings_initializer="ones", alpha=0.0)
    floats = np.array([np.nan, np.inf, -np.inf, 2.5, 3.0, -1.0, 1e20], "float32")
    out = ops.convert_to_numpy(layer(floats))
    np.testing.assert_array_equal(out[[0, 1, 2, 3, 5, 6]], 0)
    np.testing.assert_array_equal(out[4], 1)
    wide = np.array([2**32 + 5, 2**31, 5, -(2**40)], "int64")
    out = ops.convert_to_numpy(layer(wide))
    np.testing.assert_array_equal(out[[0, 1, 3]], 0)
    np.testing.assert_array_equal(out[2], 1)
    unsigned = np.array([5, 2**32 - 1], "uint32")
    out = ops.convert_to_numpy(layer(unsigned))
    np.testing.assert_array_equal(out[1], 0)
    with pytest.raises(TypeError, match="str|<U"):
        layer(np.array(["1", "2"]))
    with pytest.raises(TypeError, match="bool"):
        layer(np.array([True, False]))


def test_a_rank_one_input_with_a_combiner_is_an_error():
    layer = MixedDimEmbedding(10, 4, combiner="sum")
    with pytest.raises(ValueError, match="bag axis"):
        layer(np.arange(8))


def test_counts_saturate_instead_of_wrapping():
    layer = MixedDimEmbedding(10, 4, count_frequencies=True)
    layer.build()
    start = np.zeros(10, "int32")
    start[3] = np.iinfo(np.int32).max - 2
    layer.frequency_counts.assign(start)
    layer(np.array([[3, 3], [3, 3], [1, 3]]), training=True)
    counts = ops.convert_to_numpy(layer.frequency_counts)
    assert counts[3] == np.iinfo(np.int32).max and counts[1] == 1


def test_counting_skips_padding_with_mask_zero():
    layer = MixedDimEmbedding(10, 4, count_frequencies=True, mask_zero=True)
    layer(np.array([[0, 0, 2], [2, 0, 9]]), training=True)
    counts = ops.convert_to_numpy(layer.frequency_counts)
    np.testing.assert_array_equal(counts, [0, 0, 2, 0, 0, 0, 0, 0, 0, 1])


def test_package_import_registers_the_layers_for_loading(tmp_path, run_python):
    layer = MixedDimEmbedding(30, 4, alpha=0.5)
    inputs = keras.Input((2,), dtype="int32")
    keras.Model(inputs, layer(inputs)).save(tmp_path / "m.keras")
    code = ("import keras, keras_mixed_dim, numpy as np; "
            f"m = keras.models.load_model({str(tmp_path / 'm.keras')!r}); "
            "print(type(m.layers[1]).__name__, tuple(m(np.array([[1, 2]])).shape))")
    out = run_python("-c", code, env={"KERAS_BACKEND": BACKEND}).stdout
    assert "MixedDimEmbedding (1, 2, 4)" in out


def test_from_embedding_at_alpha_zero_is_the_original():
    table = keras.layers.Embedding(120, 8)
    table.build()
    counts = np.random.default_rng(0).integers(1, 50, size=120)
    layer = MixedDimEmbedding.from_embedding(table, counts, alpha=0.0)
    ids = np.arange(-1, 121)
    expected = np.concatenate([np.zeros((1, 8)),
                               ops.convert_to_numpy(table.embeddings),
                               np.zeros((1, 8))])
    np.testing.assert_allclose(ops.convert_to_numpy(layer(ids)), expected, atol=1e-6)


def test_the_portable_count_update_saturates_too(monkeypatch):
    # JAX, PyTorch and tf.distribute variables take the dense update path;
    # on TensorFlow force it by declining the in-place one
    if BACKEND == "tensorflow":
        from keras_mixed_dim.backend.tensorflow import counting

        monkeypatch.setattr(counting, "saturating_scatter_add", lambda *args: False)
    layer = MixedDimEmbedding(10, 4, count_frequencies=True)
    layer.build()
    start = np.zeros(10, "int32")
    start[3] = np.iinfo(np.int32).max - 1
    layer.frequency_counts.assign(start)
    layer(np.array([[3, 3], [3, 1]]), training=True)
    counts = ops.convert_to_numpy(layer.frequency_counts)
    assert counts[3] == np.iinfo(np.int32).max and counts[1] == 1


def test_float_id_tensors_are_checked_in_graph():
    # keras.Input defaults to float32: the ids reach the layer as a tensor,
    # past the host-side check, so the in-graph rule must hold on its own
    layer = MixedDimEmbedding(10, 4, alpha=0.0, embeddings_initializer="ones")
    inputs = keras.Input(shape=())
    model = keras.Model(inputs, layer(inputs))
    out = model.predict(np.array([2.5, 3.0, np.nan, -0.5, 10.0], "float32"), verbose=0)
    np.testing.assert_array_equal(out[[0, 2, 3, 4]], 0)
    np.testing.assert_array_equal(out[1], 1)


def test_int_id_tensors_are_checked_in_graph():
    # ids given as a model input reach the layer as a tensor, past the
    # host-side check; with a remap table, id input_dim must not read the
    # row of id input_dim - 1
    counts = zipf_counts_shuffled(10, seed=4)
    layer = MixedDimEmbedding(10, 4, counts=counts, alpha=0.0)
    inputs = keras.Input(shape=(), dtype="int32")
    model = keras.Model(inputs, layer(inputs))
    out = model.predict(np.array([10, -1, 3, 9], "int32"), verbose=0)
    np.testing.assert_array_equal(out[:2], 0)
    assert np.all(out[2:] != 0)


def test_counts_are_exact_and_only_in_training():
    model, layer = counting_model()
    ids = np.array([[1, 2], [1, 1], [39, -1], [3, 100]] * 8)
    model.fit(ids, np.zeros((32, 1)), epochs=2, batch_size=4, verbose=0)
    expected = np.zeros(40, dtype=np.int64)
    for i in ids.ravel():
        if 0 <= i < 40:
            expected[i] += 2  # two epochs
    np.testing.assert_array_equal(counts_of(layer), expected)
    model.predict(ids, verbose=0)
    model.evaluate(ids, np.zeros((32, 1)), verbose=0)
    layer(ids)
    np.testing.assert_array_equal(counts_of(layer), expected)


def test_counts_decay_with_a_half_life():
    model, layer = counting_model(half_life=1.0)
    ids = np.array([[5, 5]] * 4 + [[6, 6]] * 4)
    model.fit(ids, np.zeros((8, 1)), epochs=1, batch_size=4, shuffle=False, verbose=0)
    counts = counts_of(layer)
    # step 1: id 5 gets 8; step 2: halved to 4, id 6 gets 8
    np.testing.assert_allclose(counts[[5, 6]], [4.0, 8.0])


def test_counting_adds_no_op_to_inference_graphs():
    _, layer = counting_model()
    ids = np.array([[1, 2], [3, 4]], dtype="int32")
    layer(ids)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def op_types(training):
            fn = tf.function(lambda x: layer(x, training=training))
            graph = fn.get_concrete_function(
                tf.TensorSpec((None, 2), tf.int32)).graph
            return {op.type for op in graph.get_operations()}

        # exact counts update in place: only the batch's rows, O(batch)
        training_ops = op_types(True)
        assert "ResourceScatterUpdate" in training_ops  # the check can see counting...
        assert "ScatterNd" not in training_ops  # (no dense O(vocabulary) delta)
        inference = op_types(False)
        assert not inference & {"ResourceScatterUpdate", "ResourceScatterAdd",
                                "ScatterNd", "AssignVariableOp"}
    elif BACKEND == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        others = [v.value for v in layer.non_trainable_variables]

        def jaxpr(training):
            return str(jax.make_jaxpr(
                lambda x: layer.stateless_call(trainable, others, x, training=training)
            )(ids))

        assert "scatter" in jaxpr(True)
        assert "scatter" not in jaxpr(False)
    else:
        # PyTorch runs eagerly, with no graph to inspect: check the effect
        before = counts_of(layer).copy()
        layer(ids, training=False)
        np.testing.assert_array_equal(counts_of(layer), before)
        layer(ids, training=True)
        assert counts_of(layer).sum() == before.sum() + ids.size
# -- budgets: budget_bytes / budget_fraction, bytes, the deprecated budget ----

def _weight_bytes(layer):
    return sum(int(np.prod(w.shape)) * np.dtype(keras.backend.standardize_dtype(
        w.dtype)).itemsize for w in layer.weights)


def test_a_fraction_of_0_0625_plans_within_it():
    layer = MixedDimEmbedding(1000, 32, num_blocks=2, budget_fraction=0.0625)
    limit = 0.0625 * 4 * 1000 * 32
    assert layer.bytes <= limit
    # the same as the bytes it stands for
    same = MixedDimEmbedding(1000, 32, num_blocks=2, budget_bytes=limit)
    assert same.plan == layer.plan
    layer.build()
    assert _weight_bytes(layer) == layer.bytes


def test_bytes_count_every_array_the_layer_holds():
    counts = np.random.default_rng(0).integers(1, 50, size=300)
    layer = MixedDimEmbedding(300, 8, counts=counts, num_blocks=3, alpha=0.5,
                              count_frequencies=True, budget_bytes=5000)
    unbuilt = layer.bytes
    layer.build()
    # tables, projections, the int32 remap and the frequency counts
    assert unbuilt == _weight_bytes(layer) <= 5000
    assert {w.name for w in layer.weights} >= {"remap", "frequency_counts"}


def test_both_budgets_and_a_too_small_one_are_errors_naming_them():
    with pytest.raises(ValueError, match="budget_bytes=1000.*budget_fraction=0.5"):
        MixedDimEmbedding(100, 8, budget_bytes=1000, budget_fraction=0.5)
    # every block one column wide: 100 floats of tables, 4 projections of 8
    with pytest.raises(ValueError, match=r"`budget_bytes`=300 is below the smallest "
                       r"possible plan, which needs budget_bytes=528"):
        MixedDimEmbedding(100, 8, budget_bytes=300)
    # the minimum it names is met
    assert MixedDimEmbedding(100, 8, budget_bytes=528).bytes <= 528
    with pytest.raises(ValueError, match=r"`budget_fraction`=0.01 .* which needs "
                       r"budget_fraction=0.165"):
        MixedDimEmbedding(100, 8, budget_fraction=0.01)


def test_the_deprecated_parameter_budget_warns_and_plans_as_before():
    counts = np.random.default_rng(1).integers(1, 100, size=400)
    with pytest.warns(DeprecationWarning, match="MixedDimEmbedding.*parameters"):
        old = MixedDimEmbedding(400, 16, counts=counts, num_blocks=3, budget=2000)
    # parameters of tables and projections, as before; the remap on top
    assert old.plan.params <= 2000
    assert old.plan == plan_blocks(400, 16, counts=counts, num_blocks=3,
                                   budget_bytes=4 * 2000 + 4 * 400)
    new = MixedDimEmbedding(400, 16, counts=counts, num_blocks=3,
                            budget_bytes=4 * 2000 + 4 * 400)
    assert new.plan == old.plan and new.planning_args == old.planning_args
    # 0.0625 was never a fraction here: the error says what to pass
    with pytest.warns(DeprecationWarning), pytest.raises(
            ValueError, match="`budget`=0.0625 .* pass budget_fraction=0.0625"):
        MixedDimEmbedding(400, 16, budget=0.0625)


def test_a_config_saved_with_budget_loads_without_a_warning(recwarn):
    counts = np.random.default_rng(2).integers(1, 100, size=200)
    layer = MixedDimEmbedding(200, 8, counts=counts, num_blocks=3,
                              count_frequencies=True, budget_bytes=4000)
    old = layer.get_config()
    # a 0.2 config: the parameters of tables and projections
    del old["budget_bytes"]
    old["budget"] = 600.0
    loaded = MixedDimEmbedding.from_config(old)
    assert not [w for w in recwarn if w.category is DeprecationWarning]
    assert loaded.plan == layer.plan
    # the same limit in bytes: tables and projections, remap and counts
    assert loaded.planning_args["budget_bytes"] == 4 * 600 + 4 * 200 + 4 * 200
