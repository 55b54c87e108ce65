"""SparseRowOptimizer: touched rows follow the documented rule, untouched rows
and slots never change. Runs on the active Keras backend (TensorFlow by
default; `KERAS_BACKEND=jax JAX_PLATFORMS=cpu` or `KERAS_BACKEND=torch`)."""

import warnings

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
    optimizer = SparseRowOptimizer("sgd", table_optimizer=kind, table_learning_rate=0.3)
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
                                            table_learning_rate=0.3), batches)
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
    optimizer = SparseRowOptimizer("adam", table_optimizer="adam", table_learning_rate=0.01)
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
                                   table_learning_rate=0.05, beta_1=0.8, epsilon=1e-6)
    restored = SparseRowOptimizer.from_config(optimizer.get_config())
    assert restored.table_optimizer == "adam"
    assert restored.beta_1 == 0.8 and restored.epsilon == 1e-6
    assert isinstance(restored.dense_optimizer, keras.optimizers.Adam)
    np.testing.assert_allclose(float(restored.dense_optimizer.learning_rate), 0.002)
    np.testing.assert_allclose(float(restored.table_learning_rate), 0.05)
    default = SparseRowOptimizer.from_config(SparseRowOptimizer("sgd").get_config())
    assert default.get_config()["table_learning_rate"] is None
    assert "learning_rate" not in default.get_config()


def test_learning_rate_is_the_deprecated_name_of_table_learning_rate():
    """`learning_rate=` still sets the tables' rate (with a warning saying
    so), a config saved with it loads silently, and the dense variables
    keep `dense_optimizer`'s rate either way."""
    with pytest.warns(DeprecationWarning, match="tables' learning rate only"):
        old = SparseRowOptimizer(keras.optimizers.SGD(0.2), "sgd", learning_rate=0.05)
    np.testing.assert_allclose(float(old.table_learning_rate), 0.05)
    np.testing.assert_allclose(float(old.dense_optimizer.learning_rate), 0.2)
    follows = SparseRowOptimizer(keras.optimizers.SGD(0.2), "sgd")
    np.testing.assert_allclose(float(follows.table_learning_rate), 0.2)
    with pytest.raises(ValueError, match="table_learning_rate` only.*learning_rate=0.1"):
        SparseRowOptimizer("sgd", learning_rate=0.1, table_learning_rate=0.1)
    saved = SparseRowOptimizer("sgd", table_learning_rate=0.05).get_config()
    saved["learning_rate"] = saved.pop("table_learning_rate")  # as before the rename
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = SparseRowOptimizer.from_config(saved)
    np.testing.assert_allclose(float(loaded.table_learning_rate), 0.05)
    # Keras's callbacks set `optimizer.learning_rate`: the dense optimizer's
    # where the tables follow it (both then change), else the tables' own
    np.testing.assert_allclose(float(follows.learning_rate), 0.2)
    follows.learning_rate = 0.7
    np.testing.assert_allclose(float(follows.dense_optimizer.learning_rate), 0.7)
    np.testing.assert_allclose(float(follows.table_learning_rate), 0.7)
    loaded.learning_rate = 0.07
    np.testing.assert_allclose(float(loaded.table_learning_rate), 0.07)
    np.testing.assert_allclose(float(loaded.dense_optimizer.learning_rate), 0.01)
    # the same steps, either name
    batches = _batches(2)
    models = [_model(), _model()]
    _train(models[0], old, batches)
    _train(models[1], SparseRowOptimizer(keras.optimizers.SGD(0.2), "sgd",
                                         table_learning_rate=0.05), batches)
    for a, b in zip(_weights(models[0]), _weights(models[1])):
        np.testing.assert_array_equal(a, b)


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
    ({"table_learning_rate": -0.1}, "table_learning_rate.*tables' learning rate"),
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
    optimizer = SparseRowOptimizer("sgd", table_optimizer="adam", table_learning_rate=0.1)
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
                                     table_learning_rate=0.5),
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

# -- issue 21: loss scaling, the touched-row rule, constraints, QR tables ----

def _distinct_batches(steps, rows=ROWS, size=BATCH, seed=3):
    # distinct ids per batch: Keras's TensorFlow clipping and Adam treat an
    # `IndexedSlices` id's duplicates one by one, a dense gradient sums them
    rng = np.random.default_rng(seed)
    return [rng.permutation(rows)[:size, None].astype("int32") for _ in range(steps)]


def _weights(model):
    return [ops.convert_to_numpy(v).copy() for v in model.weights]


def _twins(kind_a, kind_b, batches, frozen_head=False, **model_args):
    """Two `_model`s with the same weights trained on the same batches."""
    first, second = _model(**model_args), _model(**model_args)
    second.set_weights(first.get_weights())
    if frozen_head:
        _frozen_head(first), _frozen_head(second)
    before = _weights(first)
    _train(first, kind_a, batches)
    _train(second, kind_b, batches)
    return before, _weights(first), _weights(second)


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "adam", "ftrl"])
def test_a_loss_scale_factor_gives_the_unscaled_step(kind):
    """Issue 21: TypeError on TensorFlow (IndexedSlices / float), dense
    variables never unscaled on JAX."""
    batches = _batches(2)
    make = lambda **kw: SparseRowOptimizer(  # noqa: E731
        keras.optimizers.SGD(0.1), table_optimizer=kind, table_learning_rate=0.1, **kw)
    _, scaled, plain = _twins(make(loss_scale_factor=128.0), make(), batches)
    for a, b in zip(scaled, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_loss_scale_factor_on_the_dense_optimizer_is_refused():
    with pytest.raises(ValueError, match="loss_scale_factor"):
        SparseRowOptimizer(keras.optimizers.SGD(0.1, loss_scale_factor=8.0))


@pytest.mark.parametrize("kind", ["adagrad", "adam"])
def test_a_row_whose_gradient_is_partly_zero_is_touched(kind):
    """A zero in the head's kernel zeroes that column of every row's
    gradient (as after a ReLU): the rows still follow the rule."""
    batches = _batches(2, touched=[np.arange(0, 10), np.arange(5, 15)])
    model = _model()
    head = model.get_layer("head")
    kernel = ops.convert_to_numpy(head.kernel).copy()
    kernel[1] = 0.0
    head.kernel.assign(kernel)
    _frozen_head(model)
    before = ops.convert_to_numpy(model.get_layer("table").embeddings).copy()
    _train(model, SparseRowOptimizer("sgd", table_optimizer=kind, table_learning_rate=0.3),
           batches)
    expected = _reference(before, kernel[:, 0], batches, kind, 0.3)[0]
    np.testing.assert_allclose(ops.convert_to_numpy(model.get_layer("table").embeddings),
                               expected, rtol=1e-4, atol=2e-5)


def test_table_constraints_are_applied_as_keras_applies_them():
    def build():
        ids = keras.Input((1,), dtype="int32")
        table = keras.layers.Embedding(
            ROWS, DIM, embeddings_constraint=keras.constraints.NonNeg(), name="table",
            embeddings_initializer=keras.initializers.RandomUniform(0, 0.1, seed=0))
        # a positive head: `_loss` pushes every looked-up row down, below 0
        return keras.Model(ids, keras.layers.Dense(
            1, name="head", use_bias=False, kernel_initializer="ones")(
                keras.layers.Flatten()(table(ids))))

    batches = _distinct_batches(3)
    models = [build(), build()]
    models[1].set_weights(models[0].get_weights())
    _train(models[0], SparseRowOptimizer(keras.optimizers.SGD(5.0), "sgd"), batches)
    _train(models[1], keras.optimizers.SGD(5.0), batches)
    ours, keras_table = (ops.convert_to_numpy(m.get_layer("table").embeddings)
                         for m in models)
    assert ours.min() == 0.0 and np.sum(ours == 0) >= 5  # the constraint acted
    np.testing.assert_allclose(ours, keras_table, rtol=1e-5, atol=1e-6)


def test_qr_tables_get_the_row_update():
    """QR tables are tables: with a zero dense learning rate they still move,
    exactly as under Keras's SGD with a frozen head (an independent
    reference, not another SparseRowOptimizer model)."""
    from keras_mixed_dim.layers import QREmbedding

    def build():
        ids = keras.Input((1,), dtype="int32")
        qr = QREmbedding(200, DIM, num_collisions=20, name="qr",
                         embeddings_initializer=keras.initializers.RandomUniform(
                             -1, 1, seed=0))
        head = keras.layers.Dense(1, name="head", use_bias=False)
        model = keras.Model(ids, head(keras.layers.Flatten()(qr(ids))))
        head.trainable = False
        return model

    batches = _batches(2, rows=200)
    models = [build(), build()]
    models[1].set_weights(models[0].get_weights())
    _train(models[0], SparseRowOptimizer(keras.optimizers.SGD(0.0), "sgd",
                                         table_learning_rate=0.5), batches)
    _train(models[1], keras.optimizers.SGD(0.5), batches)
    layer = models[0].get_layer("qr")
    assert {v.name for v in models[0].optimizer.table_variables} == {
        "quotient_embeddings", "remainder_embeddings"}
    for ours, theirs in zip(layer.weights, models[1].get_layer("qr").weights):
        np.testing.assert_allclose(ops.convert_to_numpy(ours), ops.convert_to_numpy(theirs),
                                   rtol=1e-5, atol=1e-6)
    assert not np.array_equal(ops.convert_to_numpy(layer.weights[0]),
                              ops.convert_to_numpy(build().get_layer("qr").weights[0]))


def test_a_schedule_learning_rate_survives_the_config_and_a_saved_model(tmp_path):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.5, 4, 0.5)
    optimizer = SparseRowOptimizer(keras.optimizers.SGD(0.1), "sgd", table_learning_rate=schedule)
    restored = SparseRowOptimizer.from_config(optimizer.get_config())
    assert isinstance(restored._learning_rate,
                      keras.optimizers.schedules.ExponentialDecay)
    assert restored._learning_rate.get_config() == schedule.get_config()
    model = _model()
    model.compile(optimizer=optimizer, loss=_loss)
    model.fit(_batches(1)[0], np.zeros((BATCH, 1), "float32"), verbose=0)
    path = tmp_path / "scheduled.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, custom_objects={"_loss": _loss})
    assert float(ops.convert_to_numpy(loaded.optimizer.learning_rate)) == pytest.approx(
        0.5 * 0.5 ** (1 / 4))


def test_a_one_dimensional_table_is_refused_by_name():
    model = _model()
    bias = keras.Variable(np.zeros((ROWS,), "float32"), name="row_bias")
    bias.sparse_rows = True
    with pytest.raises(ValueError, match=r"row_bias.*must be 2-D"):
        SparseRowOptimizer("sgd").build([model.get_layer("table").embeddings, bias])
    with pytest.raises(ValueError, match=r"'bias' of shape \(3,\).*must be 2-D"):
        SparseRowOptimizer("sgd", is_table=lambda v: True).build(
            [keras.Variable(np.zeros((3,), "float32"), name="bias")])


# -- issue 22: Keras's optimizer options on table rows ------------------------

@pytest.mark.parametrize("option", [{"clipnorm": 0.01}, {"clipvalue": 0.002},
                                    {"global_clipnorm": 0.01}])
def test_clipping_equals_keras_on_rows_and_dense_variables(option):
    """Issue 22: one step moved a row by 6.6 where Keras moves it 0.0002."""
    batches = _distinct_batches(2)
    before, ours, theirs = _twins(
        SparseRowOptimizer(keras.optimizers.SGD(0.1), "sgd", table_learning_rate=0.1, **option),
        keras.optimizers.SGD(0.1, **option), batches)
    for a, b, old in zip(ours, theirs, before):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        # clipped: no entry moves more than lr * the clip in each of 2 steps
        assert 0 < np.abs(a - old).max() <= 2 * 0.1 * next(iter(option.values())) + 1e-7


def test_clipnorm_is_per_table_on_the_summed_rows():
    """A repeated id's gradients add up before the norm, as in a dense
    gradient: against numpy."""
    model = _model()
    kernel = _frozen_head(model)
    before = ops.convert_to_numpy(model.get_layer("table").embeddings).copy()
    ids = np.array([[2]] * 10 + [[5]] * 6, "int32")
    _train(model, SparseRowOptimizer("sgd", "adagrad", table_learning_rate=0.1, clipnorm=0.05),
           [ids])
    g = _row_grads(ids, kernel, ROWS)
    g *= 0.05 / max(np.linalg.norm(g), 0.05)
    accumulator = 0.1 + np.mean(g ** 2, axis=1)
    expected = before - 0.1 * g / np.sqrt(accumulator[:, None] + 1e-7)
    np.testing.assert_allclose(ops.convert_to_numpy(model.get_layer("table").embeddings),
                               expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind,keras_optimizer", [
    ("sgd", keras.optimizers.SGD), ("ftrl", keras.optimizers.Ftrl)])
def test_weight_decay_is_lazy_on_touched_rows(kind, keras_optimizer):
    """Touched rows and dense variables as Keras's decayed optimizer;
    untouched rows not decayed (bit-exact), where Keras decays them."""
    rows = np.arange(16)
    batches = [np.random.default_rng(s).permutation(rows)[:, None].astype("int32")
               for s in range(3)]  # rows 0..15 every step, 16..39 never
    # FTRL's head would be Keras's SGD against Keras's FTRL: frozen
    before, ours, theirs = _twins(
        SparseRowOptimizer(keras.optimizers.SGD(0.1), kind, table_learning_rate=0.1,
                           weight_decay=0.3),
        keras_optimizer(0.1, weight_decay=0.3), batches, frozen_head=kind == "ftrl")
    np.testing.assert_allclose(ours[0][rows], theirs[0][rows], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours[0][16:], before[0][16:])
    assert np.all(theirs[0][16:] != before[0][16:])  # Keras decayed them
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-6)


def test_weight_decay_respects_exclusions():
    model = _model()
    optimizer = SparseRowOptimizer("sgd", "sgd", table_learning_rate=0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=["embeddings"])
    before = ops.convert_to_numpy(model.get_layer("table").embeddings).copy()
    ids = np.full((BATCH, 1), 4, "int32")
    kernel = _frozen_head(model)
    _train(model, optimizer, [ids])
    expected = before[4] - 0.1 * kernel  # no decay
    np.testing.assert_allclose(ops.convert_to_numpy(model.get_layer("table").embeddings)[4],
                               expected, rtol=1e-5)


@pytest.mark.parametrize("kwargs,dense,match", [
    ({"gradient_accumulation_steps": 2}, "sgd", "gradient_accumulation_steps"),
    ({"use_ema": True}, "sgd", "use_ema"),
    ({}, keras.optimizers.SGD(0.1, gradient_accumulation_steps=2),
     "gradient_accumulation_steps"),
    ({}, keras.optimizers.SGD(0.1, use_ema=True), "use_ema"),
    ({"weight_decay": 0.1}, keras.optimizers.SGD(0.1, weight_decay=0.1), "weight_decay"),
    ({"l1_regularization_strength": 0.1}, "sgd", "l1_regularization_strength"),
    ({"table_optimizer": "ftrl", "learning_rate_power": 0.5}, "sgd",
     "learning_rate_power"),
    ({"table_optimizer": "ftrl", "beta": -1.0}, "sgd", "beta"),
    # options the chosen table optimizer never reads
    ({"table_optimizer": "adagrad", "beta_1": 0.5}, "sgd", "beta_1"),
    ({"table_optimizer": "ftrl", "beta_2": 0.9}, "sgd", "beta_2"),
    ({"table_optimizer": "sgd", "epsilon": 1e-3}, "sgd", "epsilon"),
    ({"table_optimizer": "ftrl", "epsilon": 1e-3}, "sgd", "epsilon"),
    ({"table_optimizer": "adam", "initial_accumulator_value": 1.0}, "sgd",
     "initial_accumulator_value"),
])
def test_options_that_cannot_be_honoured_are_refused(kwargs, dense, match):
    with pytest.raises(ValueError, match=match):
        SparseRowOptimizer(dense, **kwargs)


def test_loss_scale_optimizer_equals_keras():
    """`LossScaleOptimizer` (what compile adds under mixed_float16): the
    same steps as around Keras's SGD; untouched rows bit-exact."""
    batches = _distinct_batches(2)
    lso = keras.optimizers.LossScaleOptimizer
    before, ours, theirs = _twins(
        lso(SparseRowOptimizer(keras.optimizers.SGD(0.1), "sgd", table_learning_rate=0.1)),
        lso(keras.optimizers.SGD(0.1)), batches)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    untouched = np.setdiff1d(np.arange(ROWS), np.concatenate(batches))
    np.testing.assert_array_equal(ours[0][untouched], before[0][untouched])
    assert np.any(ours[0] != before[0])


# -- FTRL ---------------------------------------------------------------------

FTRL_OPTIONS = {"learning_rate_power": -0.6, "initial_accumulator_value": 0.2,
                "l1_regularization_strength": 0.002, "l2_regularization_strength": 0.01,
                "l2_shrinkage_regularization_strength": 0.003, "beta": 0.1}


@pytest.mark.parametrize("options", [{}, FTRL_OPTIONS], ids=["defaults", "l1_l2_beta"])
def test_ftrl_equals_keras_ftrl_on_touched_rows(options):
    """Rows touched every step equal Keras's `Ftrl`, slots included; rows
    never touched keep their values (Keras's dense FTRL sets them to 0)."""
    rows = np.arange(16)
    batches = [np.random.default_rng(s).permutation(rows)[:, None].astype("int32")
               for s in range(3)]
    models = [_model(), _model()]
    models[1].set_weights(models[0].get_weights())
    for model in models:
        _frozen_head(model)
    before = ops.convert_to_numpy(models[0].get_layer("table").embeddings).copy()
    ours = SparseRowOptimizer("sgd", "ftrl", table_learning_rate=0.5, **options)
    theirs = keras.optimizers.Ftrl(0.5, **options)
    _train(models[0], ours, batches)
    _train(models[1], theirs, batches)
    a, b = (ops.convert_to_numpy(m.get_layer("table").embeddings) for m in models)
    np.testing.assert_allclose(a[rows], b[rows], rtol=1e-5, atol=1e-6)
    assert np.all(a[rows] != before[rows])
    np.testing.assert_array_equal(a[16:], before[16:])
    slot = lambda optimizer, name: [  # noqa: E731
        ops.convert_to_numpy(v) for v in optimizer.variables
        if v.name.endswith("embeddings_" + name)][0]
    for name in ("accumulator", "linear"):
        np.testing.assert_allclose(slot(ours, name)[rows], slot(theirs, name)[rows],
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(slot(ours, "accumulator")[16:],
                                  np.float32(options.get("initial_accumulator_value", 0.1)))
    np.testing.assert_array_equal(slot(ours, "linear")[16:], 0.0)


def test_ftrl_config_round_trip_and_old_configs_load():
    optimizer = SparseRowOptimizer("adam", "ftrl", table_learning_rate=0.2, **FTRL_OPTIONS)
    restored = SparseRowOptimizer.from_config(optimizer.get_config())
    for key, value in FTRL_OPTIONS.items():
        assert getattr(restored, key) == pytest.approx(value)
    # a config saved before FTRL existed has none of its keys
    old = SparseRowOptimizer("adam", "adagrad").get_config()
    for key in FTRL_OPTIONS:
        if key != "initial_accumulator_value":
            old.pop(key)
    assert SparseRowOptimizer.from_config(old).table_optimizer == "adagrad"


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
@pytest.mark.parametrize("option", [{"global_clipnorm": 1.0}, {"weight_decay": 0.1}])
def test_options_refused_under_a_tf_distribute_strategy(option):
    import tensorflow as tf

    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = _model()
        model.compile(optimizer=SparseRowOptimizer("sgd", "sgd", **option), loss=_loss)
    with pytest.raises(ValueError, match=next(iter(option))):
        model.train_on_batch(_batches(1)[0], np.zeros((BATCH, 1), "float32"))


@pytest.mark.parametrize("option", [{"loss_scale_factor": 64.0}, {"global_clipnorm": 0.01}])
def test_options_on_an_opted_out_table_equal_keras(option):
    """A table opted out of row updates goes to the dense optimizer with its
    gather's gradient (an `IndexedSlices` on TensorFlow): unscaled and
    clipped like any dense gradient."""
    batches = _distinct_batches(2)
    first, second = _model(), _model()
    second.set_weights(first.get_weights())
    first.get_layer("table").embeddings.sparse_rows = False
    _train(first, SparseRowOptimizer(keras.optimizers.SGD(0.1), "sgd", **option), batches)
    # (Keras's own TensorFlow optimizers cannot unscale an `IndexedSlices`:
    # the reference for a loss scale is the unscaled step)
    _train(second, keras.optimizers.SGD(
        0.1, **({} if "loss_scale_factor" in option else option)), batches)
    assert first.optimizer.table_variables == []
    for a, b in zip(_weights(first), _weights(second)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="PyTorch: scale_loss arms the lookups' sparse gradients")
def test_scale_loss_arms_only_the_backward_pass_of_its_loss():
    """A loss scaled for logging and never backpropagated, or a scaled
    backward pass that an error kept from its `apply`, must not leave a
    later, unrelated backward pass with sparse table gradients."""
    from keras_mixed_dim.models import read_embedding_rows

    model = _model()
    read_embedding_rows(model)
    optimizer = SparseRowOptimizer(keras.optimizers.SGD(0.1), "sgd", table_learning_rate=0.1)
    optimizer.build(model.trainable_variables)
    table = model.get_layer("table").embeddings
    ids = ops.convert_to_tensor(_batches(1)[0])

    def table_grad(scaled):
        table.value.grad = None
        loss = ops.mean(model(ids))
        if scaled:
            loss = optimizer.scale_loss(loss)
        loss.backward()
        return table.value.grad

    optimizer.scale_loss(ops.mean(model(ids)))  # for logging only
    assert not table_grad(scaled=False).is_sparse
    sparse = table_grad(scaled=True)  # ... and no `apply` follows
    assert sparse.is_sparse
    dense = table_grad(scaled=False)
    assert not dense.is_sparse
    np.testing.assert_allclose(sparse.to_dense().numpy(), dense.numpy(), rtol=1e-6)
