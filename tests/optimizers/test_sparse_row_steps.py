"""Sparse row steps: the tables' gradients reach `SparseRowOptimizer` as the
rows the layers gathered, through `model.fit`, a user's own `train_step` and
a plain functional `keras.Model`; results equal the dense computation and
Keras's own optimizers. Runs on the active Keras backend: TensorFlow
(`IndexedSlices`), PyTorch (the lookup's backward gives a sparse `.grad`
inside Keras's own step) and JAX (the row step of `IdSafeModel` and
`sparse_row_value_and_grad`; a plain `keras.Model` falls back to dense
gradients, with a warning)."""

import re
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.backend.row_gradients import RowGradient
from keras_mixed_dim.layers import HashingEmbedding
from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.layers import QREmbedding
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
from keras_mixed_dim.models.id_safe import IdSafeModel
from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer
from keras_mixed_dim.optimizers.sparse_rows import enable_sparse_row_steps
from keras_mixed_dim.optimizers.sparse_rows import is_embedding_table
from keras_mixed_dim.optimizers.sparse_rows import sparse_row_value_and_grad
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan

ROWS, DIM, BATCH = 20_000, 4, 32
BACKEND = keras.backend.backend()


class UserStepModel(keras.Model):
    """A functional model with a user's own `train_step`, written as Keras's
    guides write one for each backend. With `row_gradients=False` the
    PyTorch step does not scale the loss (and the JAX one takes Keras's
    gradients): the dense-gradient reference."""

    row_gradients = True

    def train_step(self, *args):
        return getattr(self, f"_{BACKEND}_step")(*args)

    def _torch_step(self, data):
        import torch

        x, y = data
        self.zero_grad()
        loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True))
        if self.row_gradients:
            loss = self.optimizer.scale_loss(loss)
        loss.backward()
        weights = self.trainable_weights
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in weights], weights)
        return {"loss": loss.detach()}

    def _jax_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_values, metrics_values = state
        x, y = data
        grad_fn = (sparse_row_value_and_grad(self) if self.row_gradients else
                   jax.value_and_grad(self.compute_loss_and_updates, has_aux=True))
        (loss, aux), grads = grad_fn(
            trainable, non_trainable, metrics_values, x, y, None, training=True,
            optimizer_variables=optimizer_values)
        non_trainable = aux[2]
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, grads, trainable)
        return {"loss": loss}, (trainable, non_trainable, optimizer_values,
                                metrics_values)

    def _tensorflow_step(self, data):
        import tensorflow as tf

        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True))
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        return {"loss": loss}


class DenseReferenceModel(UserStepModel):
    row_gradients = False


# The class whose `fit` gives row gradients: the package's functional model
# on JAX; on TensorFlow and PyTorch a plain `keras.Model` already does.
ROW_MODEL = IdSafeModel if BACKEND == "jax" else keras.Model
# ... and the class whose step gives a SparseRowOptimizer dense gradients.
DENSE_MODEL = keras.Model if BACKEND == "jax" else DenseReferenceModel


def _md_model(cls=keras.Model, regularizer=None):
    # block 0 is small, so the layer reads it as a whole (the head table);
    # blocks 1 and 2 are gathered by rows
    plan = BlockPlan(ROWS, DIM, [Block(0, 50, DIM), Block(50, 5000, 3),
                                 Block(5000, ROWS, 2)])
    ids = keras.Input((3,), dtype="int32")
    layer = MixedDimEmbedding(
        ROWS, DIM, plan=plan, name="md", embeddings_regularizer=regularizer,
        embeddings_initializer=keras.initializers.RandomUniform(-1, 1, seed=3))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(
        keras.layers.Flatten()(layer(ids)))
    return cls(ids, keras.layers.Dense(1, name="out")(hidden))


def _stacked_model(cls=keras.Model):
    ids = keras.Input((2,), dtype="int32")
    layer = StackedEmbedding([ROWS, 300], DIM, name="stacked")
    output = keras.layers.Dense(1, name="out")(keras.layers.Flatten()(layer(ids)))
    return cls(ids, output)


def _compressed_model(cls=keras.Model):
    ids = keras.Input((2,), dtype="int32")
    qr = QREmbedding(ROWS, DIM, num_collisions=50, name="qr")(
        keras.layers.Lambda(lambda t: t[:, :1])(ids))
    hashed = HashingEmbedding(ROWS, DIM, num_buckets=3000, hash="universal",
                              name="hashed")(keras.layers.Lambda(lambda t: t[:, 1:])(ids))
    flat = keras.layers.Concatenate()([keras.layers.Flatten()(qr),
                                       keras.layers.Flatten()(hashed)])
    return cls(ids, keras.layers.Dense(1, name="out")(flat))


def _shared_table_model(cls=keras.Model):
    """One table looked up twice in a step (two inputs, one layer)."""
    first, second = keras.Input((2,), dtype="int32"), keras.Input((1,), dtype="int32")
    table = HashingEmbedding(ROWS, DIM, num_buckets=ROWS, name="shared",
                             embeddings_initializer=keras.initializers.RandomUniform(
                                 -1, 1, seed=5))
    flat = keras.layers.Concatenate()([keras.layers.Flatten()(table(first)),
                                       keras.layers.Flatten()(table(second))])
    return cls([first, second], keras.layers.Dense(1, name="out")(flat))


def _data(steps, features, seed=0):
    rng = np.random.default_rng(seed)
    # narrow id ranges in every block, so most rows are never touched; plus
    # ids outside [0, ROWS), which must give zeros and no gradient
    pool = np.concatenate([np.arange(0, 200), np.arange(6000, 6200)])
    x = rng.choice(pool, size=(steps * BATCH, features)).astype("int32")
    x[0, 0], x[1, -1], x[2, 0] = -3, ROWS + 11, 15_000
    x[3, :] = 7  # one id repeated in a row: its gradients add up
    y = rng.random((steps * BATCH, 1)).astype("float32")
    return x, y


def _fit(model, optimizer, x, y, epochs=2):
    """Trains; returns the dense-gradient warnings."""
    model.compile(optimizer=optimizer, loss="mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
    return [str(w.message) for w in caught if "dense gradient" in str(w.message)]


def _pair(build, first_cls, second_cls):
    first, second = build(first_cls), build(second_cls)
    second.set_weights(first.get_weights())
    return first, second


def _assert_same(a, b, rtol=1e-5, atol=1e-6):
    assert len(a) == len(b)
    for va, vb in zip(a, b):
        np.testing.assert_allclose(ops.convert_to_numpy(va), ops.convert_to_numpy(vb),
                                   rtol=rtol, atol=atol, err_msg=va.path)


def _make(kind):
    return SparseRowOptimizer(keras.optimizers.Adam(0.01), table_optimizer=kind,
                              table_learning_rate=0.1)


def _assert_rows_sparse(model, before):
    """Large tables changed at some rows only; untouched rows bit-exact."""
    for variable, old in zip(model.weights, before):
        # (a remainder table's 50 rows are all looked up)
        if getattr(variable, "sparse_rows", False) and len(old) >= 300:
            new = ops.convert_to_numpy(variable)
            changed = np.any(new != old, axis=1)
            assert 0 < changed.sum() < len(new) // 2, variable.path
            np.testing.assert_array_equal(new[~changed], old[~changed])


# each table optimizer once; the MD model has masked placeholder rows, which
# lazy Adam must leave alone
@pytest.mark.parametrize("build,kind", [
    (_md_model, "adam"), (_stacked_model, "sgd"), (_compressed_model, "adagrad"),
    (_md_model, "ftrl"),
], ids=["md-adam", "stacked-sgd", "qr_hashing-adagrad", "md-ftrl"])
def test_fit_row_steps_equal_the_dense_gradient_update(build, kind):
    """`fit` gives the same weights and slots as SparseRowOptimizer on dense
    gradients, without a dense table gradient; untouched rows and their
    slots bit-for-bit unchanged."""
    x, y = _data(3, build().inputs[0].shape[-1])
    row_model, dense_model = _pair(build, ROW_MODEL, DENSE_MODEL)
    before = [ops.convert_to_numpy(v).copy() for v in row_model.weights]
    row_warnings = _fit(row_model, _make(kind), x, y)
    dense_warnings = _fit(dense_model, _make(kind), x, y)
    _assert_same(row_model.weights, dense_model.weights)
    _assert_same(row_model.optimizer.variables, dense_model.optimizer.variables)
    # the row step really ran: no dense table gradient (the reference had
    # them, except on TensorFlow, where every gather's gradient is sparse)
    assert row_warnings == []
    assert bool(dense_warnings) == (BACKEND != "tensorflow")
    _assert_rows_sparse(row_model, before)
    for slot in row_model.optimizer.variables:
        is_table_slot = len(slot.shape) and slot.shape[0] >= 300
        if is_table_slot and ("row_accumulator" in slot.path or "momentum" in slot.path):
            value = ops.convert_to_numpy(slot)
            initial = 0.1 if "row_accumulator" in slot.path else 0.0
            rows = value if value.ndim == 1 else np.abs(value).max(axis=1)
            assert 0 < np.sum(rows != initial) < len(rows)


def test_a_users_own_train_step_gets_row_gradients():
    """A `train_step` written as Keras's guides write it (PyTorch: scale the
    loss, `backward()`, `optimizer.apply`; JAX: `sparse_row_value_and_grad`
    in place of `jax.value_and_grad`) trains on rows: the dense update's
    weights and slots, no dense table gradient."""
    x, y = _data(2, 3)
    user_model, dense_model = _pair(_md_model, UserStepModel, DENSE_MODEL)
    before = [ops.convert_to_numpy(v).copy() for v in user_model.weights]
    assert _fit(user_model, _make("adam"), x, y) == []
    _fit(dense_model, _make("adam"), x, y)
    _assert_same(user_model.weights, dense_model.weights)
    _assert_same(user_model.optimizer.variables, dense_model.optimizer.variables)
    _assert_rows_sparse(user_model, before)


def test_a_plain_functional_model_with_package_layers():
    """`keras.Model(inputs, outputs)` with the package's layers: row
    gradients on TensorFlow and PyTorch; on JAX Keras's step can only give
    dense ones, which are masked to their rows (the same weights) with a
    warning that says what to do."""
    x, y = _data(2, 2)
    plain, reference = _pair(_stacked_model, keras.Model, IdSafeModel)
    found = _fit(plain, _make("adagrad"), x, y)
    _fit(reference, _make("adagrad"), x, y)
    _assert_same(plain.weights, reference.weights)
    if BACKEND == "jax":
        assert len(found) == 1 and "IdSafeModel" in found[0]
    else:
        assert found == []


def test_two_lookups_of_one_table_add_up():
    """A table looked up twice in a step (overlapping rows) gets the sum of
    both lookups' gradients: SGD on rows equals Keras's SGD on the whole
    model."""
    rng = np.random.default_rng(4)
    x = [rng.integers(0, 60, (2 * BATCH, 2)).astype("int32"),
         rng.integers(30, 90, (2 * BATCH, 1)).astype("int32")]
    y = rng.random((2 * BATCH, 1)).astype("float32")
    ours, keras_model = _pair(_shared_table_model, ROW_MODEL, keras.Model)
    before = ops.convert_to_numpy(ours.get_layer("shared").embeddings).copy()
    assert _fit(ours, SparseRowOptimizer(keras.optimizers.SGD(0.1), "sgd",
                                         table_learning_rate=0.1), x, y) == []
    _fit(keras_model, keras.optimizers.SGD(0.1), x, y)
    _assert_same(ours.weights, keras_model.weights)
    table = ops.convert_to_numpy(ours.get_layer("shared").embeddings)
    changed = np.flatnonzero(np.any(table != before, axis=1))
    np.testing.assert_array_equal(changed, np.unique(np.concatenate(
        [ids.ravel() for ids in x])))


# -- against Keras's dense optimizers, on rows every step touches -------------

def _probe_model(cls, kernel_seed=1):
    """A package table (HashingEmbedding with `hash="mod"`: row = id) and a
    frozen head, so `mean(y_pred)`'s gradient of a row is known exactly."""
    ids = keras.Input((1,), dtype="int32")
    table = HashingEmbedding(
        500, DIM, num_buckets=500, name="table",
        embeddings_initializer=keras.initializers.RandomUniform(-1, 1, seed=2))
    head = keras.layers.Dense(1, use_bias=False, name="head",
                              kernel_initializer=keras.initializers.RandomNormal(
                                  seed=kernel_seed))
    model = cls(ids, head(keras.layers.Flatten()(table(ids))))
    head.trainable = False
    return model


def _mean_loss(y_true, y_pred):
    return ops.mean(y_pred)


# every step looks up each of these rows, in another order
_POOL = np.arange(100, 140)


def _probe_batches(steps, repeats=0):
    """With `repeats`, that many ids twice. (Not against Keras's optimizers:
    on TensorFlow they square an `IndexedSlices`' values before summing
    duplicates.)"""
    rng = np.random.default_rng(7)
    return [np.concatenate([rng.permutation(_POOL), rng.choice(_POOL, repeats)])[:, None]
            .astype("int32") for _ in range(steps)]


def _probe_train(model, optimizer, batches):
    model.compile(optimizer=optimizer, loss=_mean_loss)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for ids in batches:
            model.fit(ids, np.zeros((len(ids), 1), "float32"), batch_size=len(ids),
                      verbose=0, shuffle=False)
    return [str(w.message) for w in caught if "dense gradient" in str(w.message)]


def _slot(optimizer, name):
    return ops.convert_to_numpy(next(v for v in optimizer.variables
                                     if v.path.endswith("embeddings_" + name)))


@pytest.mark.parametrize("kind,keras_optimizer,slots", [
    ("sgd", keras.optimizers.SGD, ()),
    ("adam", keras.optimizers.Adam, ("momentum", "velocity")),
    ("ftrl", keras.optimizers.Ftrl, ("accumulator", "linear")),
])
def test_touched_rows_and_slots_equal_keras_optimizer(kind, keras_optimizer, slots):
    """Rows that every step touches change exactly as under Keras's SGD,
    Adam and Ftrl, slots included; every other row and its slots stay
    bit-for-bit as they were (Keras's FTRL would zero them)."""
    batches = _probe_batches(3)
    ours, theirs = _pair(_probe_model, ROW_MODEL, keras.Model)
    before = ops.convert_to_numpy(ours.get_layer("table").embeddings).copy()
    optimizer = SparseRowOptimizer("sgd", kind, table_learning_rate=0.05)
    assert _probe_train(ours, optimizer, batches) == []
    _probe_train(theirs, keras_optimizer(0.05), batches)
    a, b = (ops.convert_to_numpy(m.get_layer("table").embeddings) for m in (ours, theirs))
    np.testing.assert_allclose(a[_POOL], b[_POOL], rtol=1e-5, atol=1e-6)
    assert np.all(a[_POOL] != before[_POOL])
    untouched = np.setdiff1d(np.arange(500), _POOL)
    np.testing.assert_array_equal(a[untouched], before[untouched])
    for name in slots:
        mine = _slot(optimizer, name)
        np.testing.assert_allclose(mine[_POOL], _slot(theirs.optimizer, name)[_POOL],
                                   rtol=1e-5, atol=1e-6)
        initial = 0.1 if name == "accumulator" else 0.0
        np.testing.assert_array_equal(mine[untouched], np.float32(initial))


def test_touched_rows_follow_row_wise_adagrad():
    """Row-wise Adagrad against numpy: `a_r += mean(g_r**2)`,
    `w_r -= lr * g_r / sqrt(a_r + eps)`, duplicates summed first."""
    batches = _probe_batches(3, repeats=24)
    model = _probe_model(ROW_MODEL)
    table = ops.convert_to_numpy(model.get_layer("table").embeddings).astype("float64")
    kernel = ops.convert_to_numpy(model.get_layer("head").kernel)[:, 0].astype("float64")
    optimizer = SparseRowOptimizer("sgd", "adagrad", table_learning_rate=0.05)
    assert _probe_train(model, optimizer, batches) == []
    w, acc = table.copy(), np.full(len(table), 0.1)
    for ids in batches:
        counts = np.bincount(ids.ravel(), minlength=len(w))
        touched = np.flatnonzero(counts)
        g = counts[touched, None] / len(ids) * kernel[None, :]
        acc[touched] += np.mean(g ** 2, axis=1)
        w[touched] -= 0.05 * g / np.sqrt(acc[touched, None] + 1e-7)
    np.testing.assert_allclose(ops.convert_to_numpy(model.get_layer("table").embeddings),
                               w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_slot(optimizer, "row_accumulator"), acc, rtol=1e-5)
    untouched = np.setdiff1d(np.arange(500), _POOL)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(model.get_layer("table").embeddings)[untouched],
        table.astype("float32")[untouched])


# -- the design: no global state, cost independent of the table --------------

def test_the_backend_modules_hold_no_state():
    """No module-level tap list or registry: the row state lives on the
    optimizer and the table variables, and none is left after a step."""
    from keras_mixed_dim.backend import backend_module

    module = backend_module("sparse_rows")
    mutable = [name for name, value in vars(module).items()
               if isinstance(value, (list, dict, set)) and not name.startswith("__")]
    assert mutable == []
    x, y = _data(1, 3)
    model = _md_model(ROW_MODEL)
    _fit(model, _make("adagrad"), x, y, epochs=1)
    for table in model.optimizer.table_variables:
        assert getattr(table, "_sparse_row_tap", None) is None
    assert model.optimizer.armed_backward is None


def _step_cost(rows, cls):
    """JAX: flops of the compiled train step of a model with a `rows`-row
    table (in-place row writes count no flops per table row)."""
    import jax

    ids = keras.Input((2,), dtype="int32")
    layer = HashingEmbedding(rows, DIM, num_buckets=rows, name="h")
    model = cls(ids, keras.layers.Dense(1)(keras.layers.Flatten()(layer(ids))))
    model.compile(SparseRowOptimizer("sgd", "adam", table_learning_rate=0.1), "mse")
    x = np.arange(2 * BATCH).reshape(BATCH, 2).astype("int32")
    y = np.zeros((BATCH, 1), "float32")
    model.optimizer.build(model.trainable_variables)
    state = tuple([v.value for v in variables] for variables in (
        model.trainable_variables, model.non_trainable_variables,
        model.optimizer.variables, model.metrics_variables))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = jax.jit(model.train_step).lower(state, (x, y)).compile()
    analysis = compiled.cost_analysis()
    return (analysis[0] if isinstance(analysis, list) else analysis)["flops"]


def _table_sized_copies(rows, optimizer):
    """PyTorch: the ops of one `train_on_batch` that make a new dense tensor
    with as many rows as the table (in-place writes, views and the sparse
    gradient are not copies)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.copies = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            # an output sharing an input's memory (detach, in-place) is no copy
            inputs = {t.untyped_storage().data_ptr()
                      for t in torch.utils._pytree.tree_leaves((args, kwargs))
                      if isinstance(t, torch.Tensor) and t.layout == torch.strided}
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if (isinstance(t, torch.Tensor) and t.dim() and t.shape[0] == rows
                        and t.layout == torch.strided
                        and t.untyped_storage().data_ptr() not in inputs):
                    self.copies.add(func._schema.name)
            return out

    ids = keras.Input((2,), dtype="int32")
    layer = HashingEmbedding(rows, DIM, num_buckets=rows, name="h")
    model = keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(layer(ids))))
    model.compile(optimizer, "mse")
    x, y = np.arange(2 * BATCH).reshape(BATCH, 2).astype("int32"), np.zeros((BATCH, 1))
    model.train_on_batch(x, y)
    with Recorder() as recorder:
        model.train_on_batch(x, y)
    return recorder.copies


@pytest.mark.skipif(BACKEND == "tensorflow", reason="JAX's and PyTorch's row paths")
def test_a_step_costs_the_same_whatever_the_table_size():
    """JAX: the row step's flops do not change with a 10x larger table (Keras's
    dense step's grow); PyTorch: no op of the step copies a table-sized
    tensor (Keras's Adam on the same model does)."""
    if BACKEND == "jax":
        assert _step_cost(2_000, IdSafeModel) == _step_cost(20_000, IdSafeModel)
        assert _step_cost(20_000, keras.Model) > 5 * _step_cost(2_000, keras.Model)
    else:
        optimizer = SparseRowOptimizer("sgd", "adam", table_learning_rate=0.1)
        assert _table_sized_copies(ROWS, optimizer) == set()
        assert _table_sized_copies(ROWS, keras.optimizers.Adam(0.1))


# -- unchanged behaviour -------------------------------------------------------

def test_row_steps_equal_keras_sgd_with_a_regularizer():
    """A table read by rows and as a whole (an L2 penalty) gets both
    gradients: sparse SGD then equals Keras's SGD on the whole model."""
    x, y = _data(2, 3)
    row_model, keras_model = _pair(
        lambda cls: _md_model(cls, keras.regularizers.L2(0.01)), ROW_MODEL, keras.Model)
    _fit(keras_model, keras.optimizers.SGD(0.05), x, y)
    _fit(row_model, SparseRowOptimizer(keras.optimizers.SGD(0.05), table_optimizer="sgd"),
         x, y)
    _assert_same(row_model.weights, keras_model.weights)


def test_other_optimizers_keep_keras_gradients():
    """With a Keras optimizer the package's tables get Keras's own (dense)
    gradients, also after the model was trained with a SparseRowOptimizer."""
    x, y = _data(2, 3)
    keras_model, ours = _pair(_md_model, keras.Model, ROW_MODEL)
    _fit(keras_model, keras.optimizers.Adam(0.01), x, y)
    _fit(ours, keras.optimizers.Adam(0.01), x, y)
    _assert_same(ours.weights, keras_model.weights)
    once_sparse, plain = _pair(_stacked_model, ROW_MODEL, keras.Model)
    _fit(once_sparse, _make("sgd"), x[:, :2], y, epochs=1)
    plain.set_weights(once_sparse.get_weights())
    _fit(once_sparse, keras.optimizers.SGD(0.1), x[:, :2], y, epochs=1)
    _fit(plain, keras.optimizers.SGD(0.1), x[:, :2], y, epochs=1)
    _assert_same(once_sparse.weights, plain.weights)


def test_a_loss_scale_optimizer_around_it_equals_keras():
    """Under a `LossScaleOptimizer` (what `compile` adds under
    mixed_float16) with the package's layers: the same weights as around
    Keras's SGD (PyTorch and JAX: through dense gradients)."""
    x, y = _data(2, 2)
    ours, keras_model = _pair(_stacked_model, ROW_MODEL, keras.Model)
    lso = keras.optimizers.LossScaleOptimizer
    _fit(ours, lso(SparseRowOptimizer(keras.optimizers.SGD(0.1), "sgd",
                                      table_learning_rate=0.1)), x, y)
    _fit(keras_model, lso(keras.optimizers.SGD(0.1)), x, y)
    _assert_same(ours.weights, keras_model.weights)


def test_enable_sparse_row_steps_leaves_the_model_alone():
    model = _stacked_model()
    step = type(model).train_step
    assert enable_sparse_row_steps(model) is model
    assert "train_step" not in vars(model) and type(model).train_step is step


def test_row_gradient_needs_indices_and_values_together():
    with pytest.raises(ValueError, match="go together"):
        RowGradient(indices=np.zeros((2,), "int32"))
    with pytest.raises(ValueError, match="go together"):
        RowGradient(values=np.zeros((2, 3), "float32"))


# -- which variables are tables ------------------------------------------------

# The rule of the design before flags: checkpoints saved then hold optimizer
# slots for the variables this regex named, so the flags must pick the same.
_OLD_TABLE_NAME = re.compile(
    r"(embeddings|block_\d+_embeddings|block_\d+_(quotient|remainder)"
    r"|(quotient|remainder)_embeddings|stacked_.*_embeddings)")


def test_layers_flag_their_tables_in_build_as_the_old_names_chose():
    models = [_md_model(), _stacked_model(), _compressed_model()]
    plan = BlockPlan(ROWS, DIM, [Block(0, 50, DIM), Block(50, ROWS, 2, storage="qr",
                                                          num_collisions=40)])
    md_qr = MixedDimEmbedding(ROWS, DIM, plan=plan)
    md_qr.build()
    variables = [v for m in models for v in m.trainable_variables] + md_qr.weights
    flagged = {v.path for v in variables if getattr(v, "sparse_rows", None)}
    by_name = {v.path for v in variables if _OLD_TABLE_NAME.fullmatch(v.name)
               and len(v.shape) == 2}
    assert flagged == by_name
    assert {"block_1_quotient", "block_1_remainder", "quotient_embeddings",
            "block_2_embeddings"} <= {path.split("/")[-1] for path in flagged}
    assert {v.path for v in variables if is_embedding_table(v)} == flagged


def test_the_flag_chooses_tables_not_the_name():
    """An unflagged variable named like a package table is not one; only
    `keras.layers.Embedding`'s `embeddings` is chosen by name. A flag set
    False opts a table out: it then trains with the dense optimizer."""
    lookalike = keras.Variable(np.zeros((10, 2), "float32"), name="block_0_embeddings")
    assert not is_embedding_table(lookalike)
    lookalike.sparse_rows = True
    assert is_embedding_table(lookalike)
    layer = keras.layers.Embedding(10, 2)
    layer.build()
    assert is_embedding_table(layer.embeddings)
    x, y = _data(1, 2)
    opted_out, keras_model = _pair(_stacked_model, ROW_MODEL, keras.Model)
    for table in opted_out.get_layer("stacked").tables:
        table.sparse_rows = False
    _fit(opted_out, SparseRowOptimizer(keras.optimizers.SGD(0.1), "adagrad"), x, y)
    _fit(keras_model, keras.optimizers.SGD(0.1), x, y)
    assert opted_out.optimizer.table_variables == []
    _assert_same(opted_out.weights, keras_model.weights)


def test_package_models_take_the_row_step():
    """`dlrm()` returns an IdSafeModel, whose step gives row gradients: the
    same weights as Keras's step, without a dense table gradient (its default
    stacked layout; per-feature MD layers are the first test's)."""
    from keras_mixed_dim.models.dlrm import dlrm
    from keras_mixed_dim.models.dlrm import embedding_layers

    def build():
        return dlrm(embedding_layers([30_000, 500, 40], 4, "table"), 4, bottom=(8,),
                    top=(8,), num_dense=2)  # stacked: the default

    rng = np.random.default_rng(0)
    x = {"dense": rng.random((2 * BATCH, 2)).astype("float32"),
         "categorical": np.stack([rng.integers(0, 300, 2 * BATCH),
                                  rng.integers(0, 500, 2 * BATCH),
                                  rng.integers(0, 40, 2 * BATCH)], 1).astype("int32")}
    y = rng.integers(0, 2, (2 * BATCH, 1)).astype("float32")
    row_model, keras_model = build(), build()
    keras_model.set_weights(row_model.get_weights())
    # Keras's own step, for reference
    keras_model.train_step = keras.Model.train_step.__get__(keras_model)
    found = {}
    for name, model in (("row", row_model), ("keras", keras_model)):
        model.compile(optimizer=SparseRowOptimizer(keras.optimizers.Adam(0.01),
                                                   table_optimizer="adagrad",
                                                   table_learning_rate=0.1),
                      loss="binary_crossentropy")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
        found[name] = [w for w in caught if "dense gradient" in str(w.message)]
    assert found["row"] == []
    assert bool(found["keras"]) == (BACKEND == "jax")
    _assert_same(row_model.weights, keras_model.weights)


def test_mixed_bfloat16_keeps_the_row_step_and_float32_tables():
    """Under mixed_bfloat16 the row gradients reach the optimizer, tables
    stay float32, and the weights equal the dense-gradient update under the
    same policy and, within bfloat16's rounding, the float32 run's."""
    # seeded: bfloat16's rounding of some unseeded starting weights once put
    # one element of the step just past the 5% tolerance
    keras.utils.set_random_seed(0)
    x, y = _data(2, 2)
    first = _stacked_model()
    initial = first.get_weights()
    results = {}
    for policy, cls in (("mixed_bfloat16", ROW_MODEL), ("float32", ROW_MODEL),
                        ("mixed_bfloat16", DENSE_MODEL)):
        keras.mixed_precision.set_dtype_policy(policy)
        try:
            model = _stacked_model(cls)
            model.set_weights(initial)
            found = _fit(model, _make("adagrad"), x, y)
        finally:
            keras.mixed_precision.set_dtype_policy("float32")
        assert model.get_layer("stacked").tables[0].dtype == "float32"
        if cls is ROW_MODEL:
            assert found == []
        results[policy, cls] = [ops.convert_to_numpy(w) for w in model.weights]
    rows = results["mixed_bfloat16", ROW_MODEL]
    for got, want in zip(rows, results["mixed_bfloat16", DENSE_MODEL]):
        # JAX's row step adds its zero delta to bfloat16 activations: rounding
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    for got, want, start in zip(rows, results["float32", ROW_MODEL], initial):
        # the steps taken, against float32's: bfloat16 keeps 8 bits
        step, reference_step = got - start, want - start
        np.testing.assert_allclose(step, reference_step, rtol=0,
                                   atol=0.05 * np.abs(reference_step).max())
        assert np.abs(reference_step).max() > 0.01


def test_a_loss_scale_factor_gives_the_unscaled_row_step():
    """Row gradients and dense gradients alike are unscaled (issue 21)."""
    x, y = _data(2, 3)
    scaled, plain = _pair(_md_model, ROW_MODEL, ROW_MODEL)
    make = lambda **kw: SparseRowOptimizer(  # noqa: E731
        keras.optimizers.Adam(0.01), table_optimizer="adagrad", table_learning_rate=0.1, **kw)
    assert _fit(scaled, make(loss_scale_factor=128.0), x, y) == []
    _fit(plain, make(), x, y)
    _assert_same(scaled.weights, plain.weights)
