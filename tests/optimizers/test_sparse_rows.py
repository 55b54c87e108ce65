"""SparseRowOptimizer: touched rows follow the documented rule, untouched rows
and slots never change. Runs on the active Keras backend (TensorFlow by
default; `KERAS_BACKEND=jax JAX_PLATFORMS=cpu` or `KERAS_BACKEND=torch`)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer
from keras_mixed_dim.optimizers.sparse_rows import is_embedding_table
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan

ROWS, DIM, BATCH = 40, 3, 16


def _loss(y_true, y_pred):
    # d loss / d row r = count(r in batch) / BATCH * kernel: known exactly
    return ops.mean(y_pred)


def _model(rows=ROWS, dim=DIM, seed=0):
    ids = keras.Input((1,), dtype="int32")
    table = keras.layers.Embedding(
        rows, dim, embeddings_initializer=keras.initializers.RandomUniform(-1, 1, seed),
        name="table")
    head = keras.layers.Dense(1, use_bias=False, name="head",
                              kernel_initializer=keras.initializers.RandomNormal(seed=seed))
    output = head(keras.layers.Flatten()(table(ids)))
    return keras.Model(ids, output)


def _batches(steps, rows=ROWS, touched=None, seed=1):
    rng = np.random.default_rng(seed)
    batches = []
    for s in range(steps):
        pool = np.arange(rows) if touched is None else touched[s]
        batches.append(rng.choice(pool, size=(BATCH, 1)).astype("int32"))
    return batches


def _train(model, optimizer, batches):
    model.compile(optimizer=optimizer, loss=_loss)
    for ids in batches:
        model.train_on_batch(ids, np.zeros((BATCH, 1), "float32"))


def _row_grads(ids, kernel, rows):
    counts = np.bincount(ids.ravel(), minlength=rows).astype("float64")
    return counts[:, None] / BATCH * kernel[None, :]


def _reference(table, kernel, batches, kind, lr, steps_kernel=None, eps=1e-7,
               beta_1=0.9, beta_2=0.999, acc0=0.1):
    """Numpy: the documented row-wise rules, touched rows only."""
    w = table.astype("float64").copy()
    acc = np.full(w.shape[0], acc0)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, ids in enumerate(batches, start=1):
        g = _row_grads(ids, kernel, w.shape[0])
        touched = np.unique(ids)
        gt = g[touched]
        if kind == "sgd":
            w[touched] -= lr * gt
        elif kind == "adagrad":
            acc[touched] += np.mean(gt ** 2, axis=1)
            w[touched] -= lr * gt / np.sqrt(acc[touched, None] + eps)
        else:
            m[touched] = beta_1 * m[touched] + (1 - beta_1) * gt
            v[touched] = beta_2 * v[touched] + (1 - beta_2) * gt ** 2
            alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
            w[touched] -= alpha * m[touched] / (np.sqrt(v[touched]) + eps)
    return w, acc, m, v


def _frozen_head(model):
    # A fixed head keeps every step's table gradient known in closed form.
    model.get_layer("head").trainable = False
    return ops.convert_to_numpy(model.get_layer("head").kernel)[:, 0]


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "adam"])
def test_touched_rows_follow_rule_untouched_rows_and_slots_bit_exact(kind):
    touched = [np.arange(0, 10), np.arange(5, 15), np.arange(0, 3)]
    batches = _batches(3, touched=touched)
    model = _model()
    kernel = _frozen_head(model)
    before = ops.convert_to_numpy(model.get_layer("table").embeddings).copy()
    optimizer = SparseRowOptimizer("sgd", table_optimizer=kind, learning_rate=0.3)
    _train(model, optimizer, batches)
    after = ops.convert_to_numpy(model.get_layer("table").embeddings)
    expected, acc, m, v = _reference(before, kernel, batches, kind, 0.3)
    # float32 against float64, after three steps of size ~lr
    np.testing.assert_allclose(after, expected, rtol=1e-4, atol=2e-5)
    untouched = np.setdiff1d(np.arange(ROWS), np.concatenate(batches).ravel())
    assert len(untouched) >= 20
    np.testing.assert_array_equal(after[untouched], before[untouched])
    slots = [ops.convert_to_numpy(s) for s in optimizer.variables
             if "row_accumulator" in s.path or "momentum" in s.path
             or "velocity" in s.path]
    if kind == "adagrad":
        (accumulator,) = slots
        assert accumulator.shape == (ROWS,)  # one per row, not per entry
        np.testing.assert_allclose(accumulator, acc, rtol=1e-5)
        np.testing.assert_array_equal(accumulator[untouched], np.float32(0.1))
    if kind == "adam":
        momentum, velocity = slots
        np.testing.assert_allclose(momentum, m, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(velocity, v, rtol=1e-4, atol=1e-10)
        # a row touched in step 1 only keeps its moments from step 1 (lazy)
        np.testing.assert_array_equal(momentum[untouched], 0.0)
        assert np.all(momentum[:3] != 0)


@pytest.mark.parametrize("kind,keras_optimizer,dim,all_rows", [
    ("sgd", lambda: keras.optimizers.SGD(0.3), DIM, False),
    ("adagrad", lambda: keras.optimizers.Adagrad(0.3), 1, False),
    ("adam", lambda: keras.optimizers.Adam(0.3), DIM, True),
])
def test_equals_keras_optimizer_where_documented(kind, keras_optimizer, dim, all_rows):
    """SGD always, row-wise Adagrad on one-column tables, lazy Adam when every
    row is touched every step: the same weights as Keras's own optimizer."""
    rows = BATCH if all_rows else ROWS
    batches = _batches(3, rows=rows)
    if all_rows:
        # each row once per batch: on TensorFlow Keras's Adam squares each
        # occurrence's gradient of a repeated id (IndexedSlices values)
        # instead of the summed gradient, which no dense optimizer does
        rng = np.random.default_rng(0)
        batches = [rng.permutation(rows)[:, None].astype("int32") for _ in range(3)]
    sparse_model, dense_model = _model(rows, dim), _model(rows, dim)
    _frozen_head(sparse_model), _frozen_head(dense_model)
    _train(sparse_model, SparseRowOptimizer("sgd", table_optimizer=kind,
                                            learning_rate=0.3), batches)
    _train(dense_model, keras_optimizer(), batches)
    np.testing.assert_allclose(
        ops.convert_to_numpy(sparse_model.get_layer("table").embeddings),
        ops.convert_to_numpy(dense_model.get_layer("table").embeddings),
        rtol=1e-4, atol=1e-5)


def test_dense_variables_keep_the_dense_optimizer():
    # one step: afterwards the tables (SGD against Adam) and so the head's
    # gradients differ
    batches = _batches(1)
    sparse_model, dense_model = _model(), _model()
    _train(sparse_model, SparseRowOptimizer(keras.optimizers.Adam(0.01),
                                            table_optimizer="sgd"), batches)
    _train(dense_model, keras.optimizers.Adam(0.01), batches)
    # the head's kernel got Adam: same as with Keras's Adam alone
    np.testing.assert_allclose(
        ops.convert_to_numpy(sparse_model.get_layer("head").kernel),
        ops.convert_to_numpy(dense_model.get_layer("head").kernel), rtol=1e-5)
    optimizer = sparse_model.optimizer
    assert [v.path for v in optimizer.table_variables] == ["table/embeddings"]
    assert [v.path for v in optimizer.dense_variables] == ["head/kernel"]


def test_mixed_dim_blocks_in_fit():
    rows = 6000
    plan = BlockPlan(rows, 8, [Block(0, 100, 8), Block(100, 6000, 4)])
    ids = keras.Input((1,), dtype="int32")
    layer = MixedDimEmbedding(rows, 8, plan=plan, name="md")
    output = keras.layers.Dense(1)(keras.layers.Flatten()(layer(ids)))
    model = keras.Model(ids, output)
    block_0 = ops.convert_to_numpy(layer.block_embeddings[0]).copy()
    block_1 = ops.convert_to_numpy(layer.block_embeddings[1]).copy()
    projection = ops.convert_to_numpy(layer.block_projections[1]).copy()
    rng = np.random.default_rng(0)
    x = rng.integers(50, 3000, size=(256, 1)).astype("int32")
    y = rng.random((256, 1)).astype("float32")
    optimizer = SparseRowOptimizer("adam", table_optimizer="adam", learning_rate=0.01)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert {v.name for v in optimizer.table_variables} == {
        "block_0_embeddings", "block_1_embeddings"}
    new_0 = ops.convert_to_numpy(layer.block_embeddings[0])
    new_1 = ops.convert_to_numpy(layer.block_embeddings[1])
    touched_1 = np.unique(x[x >= 100]) - 100
    untouched_1 = np.setdiff1d(np.arange(5900), touched_1)
    np.testing.assert_array_equal(new_1[untouched_1], block_1[untouched_1])
    assert np.all((new_1[touched_1] != block_1[touched_1]).any(axis=1))
    # block 0 is small: the layer differentiates it densely (the masked path)
    touched_0 = np.unique(x[x < 100])
    untouched_0 = np.setdiff1d(np.arange(100), touched_0)
    np.testing.assert_array_equal(new_0[untouched_0], block_0[untouched_0])
    assert np.all((new_0[touched_0] != block_0[touched_0]).any(axis=1))
    assert np.any(ops.convert_to_numpy(layer.block_projections[1]) != projection)


def test_selection_rule_and_opt_out():
    model = _model()
    table = model.get_layer("table").embeddings
    kernel = model.get_layer("head").kernel
    assert is_embedding_table(table) and not is_embedding_table(kernel)
    table.sparse_rows = False
    assert not is_embedding_table(table)
    kernel.sparse_rows = True
    assert is_embedding_table(kernel)
    optimizer = SparseRowOptimizer("sgd", is_table=lambda v: v.name == "kernel")
    optimizer.build([table, kernel])
    assert optimizer.table_variables == [kernel]


def test_config_round_trip():
    optimizer = SparseRowOptimizer(keras.optimizers.Adam(0.002), table_optimizer="adam",
                                   learning_rate=0.05, beta_1=0.8, epsilon=1e-6)
    restored = SparseRowOptimizer.from_config(optimizer.get_config())
    assert restored.table_optimizer == "adam"
    assert restored.beta_1 == 0.8 and restored.epsilon == 1e-6
    assert isinstance(restored.dense_optimizer, keras.optimizers.Adam)
    np.testing.assert_allclose(float(restored.dense_optimizer.learning_rate), 0.002)
    np.testing.assert_allclose(float(restored.learning_rate), 0.05)
    default = SparseRowOptimizer.from_config(SparseRowOptimizer("sgd").get_config())
    assert default.get_config()["learning_rate"] is None


def test_saved_model_with_optimizer_round_trip(tmp_path):
    model = _model()
    model.compile(optimizer=SparseRowOptimizer("adam", table_optimizer="adagrad"),
                  loss="mse")
    model.fit(_batches(1)[0], np.zeros((BATCH, 1), "float32"), verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, SparseRowOptimizer)
    assert loaded.optimizer.table_optimizer == "adagrad"
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded.get_layer("table").embeddings),
        ops.convert_to_numpy(model.get_layer("table").embeddings))


@pytest.mark.parametrize("kwargs,match", [
    ({"table_optimizer": "rmsprop"}, "table_optimizer"),
    ({"beta_1": 1.0}, "beta_1"),
    ({"beta_2": -0.1}, "beta_2"),
    ({"epsilon": 0.0}, "epsilon"),
    ({"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"is_table": "embeddings"}, "is_table"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseRowOptimizer("sgd", **kwargs)


def test_bad_dense_optimizer():
    with pytest.raises(ValueError, match="SparseRowOptimizer"):
        SparseRowOptimizer(SparseRowOptimizer("sgd"))
    with pytest.raises(ValueError):
        SparseRowOptimizer("no_such_optimizer")


def test_gathered_but_masked_rows_keep_their_moments():
    """A layer that gathers a row and masks it out (zero gradient) must not
    decay that row's Adam moments or move it."""
    ids = keras.Input((1,), dtype="int32")
    keep = keras.Input((1, 1), dtype="float32")
    table = keras.layers.Embedding(ROWS, DIM, name="table")
    values = keras.layers.Multiply()([table(ids), keep])
    model = keras.Model([ids, keep], keras.layers.Dense(1)(keras.layers.Flatten()(values)))
    optimizer = SparseRowOptimizer("sgd", table_optimizer="adam", learning_rate=0.1)
    model.compile(optimizer=optimizer, loss="mse")
    x = np.full((BATCH, 1), 3, "int32")
    y = np.ones((BATCH, 1), "float32")
    model.train_on_batch([x, np.ones((BATCH, 1, 1), "float32")], y)
    momentum = [v for v in optimizer.variables if "momentum" in v.path][0]
    velocity = [v for v in optimizer.variables if "velocity" in v.path][0]
    before = [ops.convert_to_numpy(v)[3].copy() for v in (momentum, velocity,
                                                          table.embeddings)]
    assert np.all(before[0] != 0)
    model.train_on_batch([x, np.zeros((BATCH, 1, 1), "float32")], y)
    for variable, old in zip((momentum, velocity, table.embeddings), before):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable)[3], old)


def test_weighted_bags_with_repeated_ids_equal_the_dense_optimizer(combiner="sqrtn"):
    """Each occurrence of an id in a bag adds its weight x combiner share of
    the bag's gradient to the row (repeats summed): sparse row SGD on a
    stacked table of bags equals Keras's SGD on the same model."""
    from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
    from keras_mixed_dim.models import IdSafeModel

    rng = np.random.default_rng(3)
    ids = rng.integers(-1, 12, size=(BATCH, 5)).astype("int32")
    ids[:, 1] = ids[:, 0]  # repeats within each bag
    weights = rng.uniform(0.1, 2.0, size=(BATCH, 5)).astype("float32")

    def model():
        keras.utils.set_random_seed(0)
        bag = keras.Input((4,), dtype="int32")
        single = keras.Input((1,), dtype="int32")
        w = keras.Input((5,), dtype="float32")
        table = StackedEmbedding([ROWS, 12], DIM, bag_sizes=[1, 4],
                                 combiner=combiner, name="stacked")
        vectors = table(keras.layers.Concatenate()([single, bag]), weights=w)
        out = keras.layers.Dense(1, name="head")(keras.layers.Flatten()(vectors))
        # its train step gives the optimizer the gathered rows on JAX and
        # PyTorch too (the row step, not a dense table gradient)
        return IdSafeModel([single, bag, w], out)

    x = [ids[:, :1], ids[:, 1:], weights]
    y = rng.normal(size=(BATCH, 1)).astype("float32")
    results = []
    optimizers = (SparseRowOptimizer(keras.optimizers.SGD(0.5), table_optimizer="sgd",
                                     learning_rate=0.5),
                  keras.optimizers.SGD(0.5))
    initial = ops.convert_to_numpy(model().get_layer("stacked").tables[0])
    for optimizer in optimizers:
        m = model()
        m.compile(optimizer=optimizer, loss="mse")
        for _ in range(2):
            m.train_on_batch(x, y)
        results.append(ops.convert_to_numpy(m.get_layer("stacked").tables[0]))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)
    # the sparse path was taken, and the first step moved the bags' rows
    assert [v.path for v in optimizers[0].table_variables] == ["stacked/stacked_w3_embeddings"]
    assert not np.allclose(results[0], initial)
