"""`enable_sparse_row_steps`: on JAX and PyTorch the train step differentiates
tables by the rows the layers gather; results equal the dense computation.
Runs on the active Keras backend (on TensorFlow the step is Keras's own and
the same assertions check the `IndexedSlices` path)."""

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
from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer
from keras_mixed_dim.optimizers.sparse_rows import enable_sparse_row_steps
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan

ROWS, DIM, BATCH = 20_000, 4, 32
BACKEND = keras.backend.backend()


def _md_model(regularizer=None):
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
    return keras.Model(ids, keras.layers.Dense(1, name="out")(hidden))


def _stacked_model():
    ids = keras.Input((2,), dtype="int32")
    layer = StackedEmbedding([ROWS, 300], DIM, name="stacked")
    output = keras.layers.Dense(1, name="out")(keras.layers.Flatten()(layer(ids)))
    return keras.Model(ids, output)


def _compressed_model():
    ids = keras.Input((2,), dtype="int32")
    qr = QREmbedding(ROWS, DIM, num_collisions=50, name="qr")(
        keras.layers.Lambda(lambda t: t[:, :1])(ids))
    hashed = HashingEmbedding(ROWS, DIM, num_buckets=3000, hash="universal",
                              name="hashed")(keras.layers.Lambda(lambda t: t[:, 1:])(ids))
    flat = keras.layers.Concatenate()([keras.layers.Flatten()(qr),
                                       keras.layers.Flatten()(hashed)])
    return keras.Model(ids, keras.layers.Dense(1, name="out")(flat))


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


def _fit(model, optimizer, x, y, sparse_steps):
    if sparse_steps:
        enable_sparse_row_steps(model)
    model.compile(optimizer=optimizer, loss="mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    return [str(w.message) for w in caught if "dense gradient" in str(w.message)]


def _pair(build):
    first, second = build(), build()
    second.set_weights(first.get_weights())
    return first, second


def _assert_same(a, b, rtol=1e-5, atol=1e-6):
    for va, vb in zip(a, b):
        np.testing.assert_allclose(ops.convert_to_numpy(va), ops.convert_to_numpy(vb),
                                   rtol=rtol, atol=atol, err_msg=va.path)


# each table optimizer once; the MD model has masked placeholder rows, which
# lazy Adam must leave alone
@pytest.mark.parametrize("build,kind", [
    (_md_model, "adam"), (_stacked_model, "sgd"), (_compressed_model, "adagrad"),
    (_md_model, "ftrl"),
], ids=["md-adam", "stacked-sgd", "qr_hashing-adagrad", "md-ftrl"])
def test_row_steps_equal_the_dense_gradient_update(build, kind):
    """The same weights and slots as SparseRowOptimizer on dense gradients;
    untouched rows and their slots bit-for-bit unchanged."""
    x, y = _data(3, build().inputs[0].shape[-1])
    dense_model, row_model = _pair(build)
    before = [ops.convert_to_numpy(v).copy() for v in row_model.weights]
    make = lambda: SparseRowOptimizer(  # noqa: E731
        keras.optimizers.Adam(0.01), table_optimizer=kind, learning_rate=0.1)
    dense_warnings = _fit(dense_model, make(), x, y, sparse_steps=False)
    row_warnings = _fit(row_model, make(), x, y, sparse_steps=True)
    _assert_same(row_model.weights, dense_model.weights)
    _assert_same(row_model.optimizer.variables, dense_model.optimizer.variables)
    # the row step really ran where there is one: no dense table gradients
    assert row_warnings == []
    assert bool(dense_warnings) == (BACKEND != "tensorflow")
    for variable, old in zip(row_model.weights, before):
        # the large tables (a remainder table's 50 rows are all looked up)
        if variable.name.endswith("embeddings") and len(old) >= 300:
            new = ops.convert_to_numpy(variable)
            changed = np.any(new != old, axis=1)
            assert 0 < changed.sum() < len(new) // 2, variable.path
            untouched = ~changed
            np.testing.assert_array_equal(new[untouched], old[untouched])
    for slot in row_model.optimizer.variables:
        is_table_slot = len(slot.shape) and slot.shape[0] >= 300
        if is_table_slot and ("row_accumulator" in slot.path or "momentum" in slot.path):
            value = ops.convert_to_numpy(slot)
            initial = 0.1 if "row_accumulator" in slot.path else 0.0
            rows = value if value.ndim == 1 else np.abs(value).max(axis=1)
            assert 0 < np.sum(rows != initial) < len(rows)


def test_row_steps_equal_keras_sgd_with_a_regularizer():
    """A table read by rows and as a whole (an L2 penalty) gets both
    gradients: sparse SGD then equals Keras's SGD on the whole model."""
    x, y = _data(2, 3)
    keras_model, row_model = _pair(lambda: _md_model(keras.regularizers.L2(0.01)))
    _fit(keras_model, keras.optimizers.SGD(0.05), x, y, sparse_steps=False)
    _fit(row_model, SparseRowOptimizer(keras.optimizers.SGD(0.05), table_optimizer="sgd"),
         x, y, sparse_steps=True)
    _assert_same(row_model.weights, keras_model.weights)


def test_other_optimizers_keep_the_keras_step():
    x, y = _data(2, 3)
    keras_model, enabled = _pair(_md_model)
    _fit(keras_model, keras.optimizers.Adam(0.01), x, y, sparse_steps=False)
    _fit(enabled, keras.optimizers.Adam(0.01), x, y, sparse_steps=True)
    _assert_same(enabled.weights, keras_model.weights)


def test_enabling_after_a_first_fit_replaces_the_step():
    x, y = _data(1, 2)
    model = _stacked_model()
    model.compile(optimizer=SparseRowOptimizer("sgd", table_optimizer="adagrad"),
                  loss="mse")
    model.fit(x, y, batch_size=BATCH, verbose=0)
    enable_sparse_row_steps(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=BATCH, verbose=0)
    assert not [w for w in caught if "dense gradient" in str(w.message)]


def test_row_gradient_needs_indices_and_values_together():
    with pytest.raises(ValueError, match="go together"):
        RowGradient(indices=np.zeros((2,), "int32"))
    with pytest.raises(ValueError, match="go together"):
        RowGradient(values=np.zeros((2, 3), "float32"))


def test_package_models_take_the_row_step():
    """`dlrm()` returns an IdSafeModel, whose step is the row step: the same
    weights as Keras's step, without a dense table gradient (its default
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
                                                   learning_rate=0.1),
                      loss="binary_crossentropy")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
        found[name] = [w for w in caught if "dense gradient" in str(w.message)]
    assert found["row"] == []
    assert bool(found["keras"]) == (BACKEND != "tensorflow")
    _assert_same(row_model.weights, keras_model.weights)


def test_mixed_bfloat16_keeps_the_row_step_and_float32_tables():
    """Under mixed_bfloat16 the row step runs, tables stay float32, and the
    weights equal the dense-gradient update under the same policy (JAX,
    PyTorch; on TensorFlow both are Keras's step) and, within bfloat16's
    rounding, the float32 run's."""
    x, y = _data(2, 2)
    make = lambda: SparseRowOptimizer(  # noqa: E731
        keras.optimizers.Adam(0.01), table_optimizer="adagrad", learning_rate=0.1)
    first = _stacked_model()
    initial = first.get_weights()
    results = {}
    runs = [("mixed_bfloat16", True), ("float32", True)]
    if BACKEND != "tensorflow":  # (there both are Keras's own step)
        runs.append(("mixed_bfloat16", False))
    for policy, sparse_steps in runs:
        keras.mixed_precision.set_dtype_policy(policy)
        try:
            model = _stacked_model()
            model.set_weights(initial)
            found = _fit(model, make(), x, y, sparse_steps=sparse_steps)
        finally:
            keras.mixed_precision.set_dtype_policy("float32")
        table = model.get_layer("stacked").tables[0]
        assert table.dtype == "float32"
        if sparse_steps:
            assert found == []
        results[policy, sparse_steps] = [ops.convert_to_numpy(w) for w in model.weights]
    rows, reference = results["mixed_bfloat16", True], results["float32", True]
    for got, want in zip(rows, results.get(("mixed_bfloat16", False), rows)):
        # the row step adds its zero delta to bfloat16 activations: rounding
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    for got, want, start in zip(rows, reference, initial):
        # the steps taken, against float32's: bfloat16 keeps 8 bits
        step, reference_step = got - start, want - start
        np.testing.assert_allclose(step, reference_step, rtol=0,
                                   atol=0.05 * np.abs(reference_step).max())
        assert np.abs(reference_step).max() > 0.01


def test_a_loss_scale_factor_gives_the_unscaled_row_step():
    """Row gradients and dense gradients alike are unscaled (issue 21)."""
    x, y = _data(2, 3)
    scaled, plain = _pair(_md_model)
    make = lambda **kw: SparseRowOptimizer(  # noqa: E731
        keras.optimizers.Adam(0.01), table_optimizer="adagrad", learning_rate=0.1, **kw)
    assert _fit(scaled, make(loss_scale_factor=128.0), x, y, sparse_steps=True) == []
    _fit(plain, make(), x, y, sparse_steps=True)
    _assert_same(scaled.weights, plain.weights)
