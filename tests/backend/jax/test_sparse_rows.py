"""JAX's row step pieces against numpy and `jax.grad`: distinct rows with
summed gradients (static size, out-of-range padding), gathers and scatters
that drop the padding, and `value_and_grad`'s row gradients equal to the
dense gradient's rows."""

import warnings

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="a JAX-only module")


@pytest.fixture
def rows_module():
    from keras_mixed_dim.backend.jax import sparse_rows

    return sparse_rows


def test_unique_rows_sums_duplicates_and_pads_with_num_rows(rows_module):
    indices = np.array([4, 1, 4, 4, 0], "int32")
    values = np.arange(10, dtype="float32").reshape(5, 2)
    rows, summed = rows_module.unique_rows(indices, values, 6)
    rows, summed = np.asarray(rows), np.asarray(summed)
    assert rows.shape == (5,) and summed.shape == (5, 2)  # static: one slot per index
    np.testing.assert_array_equal(rows, [0, 1, 4, 6, 6])
    expected = {r: values[indices == r].sum(0) for r in (0, 1, 4)}
    for slot, row in enumerate(rows[:3]):
        np.testing.assert_array_equal(summed[slot], expected[row])
    np.testing.assert_array_equal(summed[3:], 0)


def test_gather_and_scatter_rows_drop_the_padding(rows_module):
    table = keras.Variable(np.arange(12, dtype="float32").reshape(4, 3))
    rows = np.array([2, 0, 4], "int32")  # 4: padding (out of range)
    gathered = np.asarray(rows_module.gather_rows(table, rows))
    np.testing.assert_array_equal(gathered, [[6, 7, 8], [0, 1, 2], [0, 0, 0]])
    rows_module.scatter_rows(table, rows, -np.ones((3, 3), "float32"))
    expected = np.arange(12, dtype="float32").reshape(4, 3)
    expected[[2, 0]] = -1
    np.testing.assert_array_equal(np.asarray(table.value), expected)


def test_take_rows_is_none_outside_a_row_step(rows_module):
    table = keras.Variable(np.zeros((3, 2), "float32"))
    assert rows_module.take_rows(table, np.array([1], "int32")) is None


def test_value_and_grad_gives_the_dense_gradients_rows():
    import jax

    from keras_mixed_dim.backend.jax.sparse_rows import value_and_grad
    from keras_mixed_dim.backend.row_gradients import RowGradient
    from keras_mixed_dim.layers.hashing_embedding import HashingEmbedding
    from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer

    keras.utils.set_random_seed(0)
    ids = keras.Input((3,), dtype="int32")
    out = keras.layers.Dense(1)(keras.layers.Flatten()(HashingEmbedding(8, 2, num_buckets=5)(ids)))
    model = keras.Model(ids, out)
    model.compile(SparseRowOptimizer(keras.optimizers.SGD(0.1), "sgd"), "mse")
    model.optimizer.build(model.trainable_variables)
    x = np.array([[1, 5, 1], [3, 1, 0]], "int32")
    y = np.array([[1.0], [-1.0]], "float32")
    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in model.metrics_variables])
    optimizer_variables = [v.value for v in model.optimizer.variables]
    (loss, _), grads = value_and_grad(model)(
        *state, x, y, optimizer_variables=optimizer_variables)
    (dense_loss, _), dense = jax.value_and_grad(
        model.compute_loss_and_updates, has_aux=True)(
            *state, x, y, None, optimizer_variables=optimizer_variables)
    np.testing.assert_allclose(loss, dense_loss, rtol=1e-6)
    table = model.optimizer.table_variables[0]
    position = [id(v) for v in model.trainable_variables].index(id(table))
    rows = grads[position]
    assert isinstance(rows, RowGradient) and rows.dense is None
    from_rows = np.zeros(table.shape, "float32")
    np.add.at(from_rows, np.asarray(rows.indices), np.asarray(rows.values))
    np.testing.assert_allclose(from_rows, np.asarray(dense[position]), rtol=1e-5, atol=1e-7)
    for i, grad in enumerate(grads):
        if i != position:
            np.testing.assert_allclose(np.asarray(grad), np.asarray(dense[i]), rtol=1e-6)


def test_a_refused_nested_row_step_leaves_no_tap_behind(rows_module):
    first, second = keras.Variable(np.zeros((3, 2))), keras.Variable(np.zeros((3, 2)))
    setattr(second, rows_module.TAP_ATTRIBUTE, object())  # traced by another step
    with pytest.raises(RuntimeError, match="already being traced"):
        with rows_module._Tapped([first, second], object()):
            pass
    assert getattr(first, rows_module.TAP_ATTRIBUTE, None) is None


def test_scatter_sub_rows_adds_up_duplicates(rows_module):
    start = np.arange(12, dtype="float32").reshape(4, 3)
    table = keras.Variable(start)
    indices = np.array([2, 0, 2, 2], "int32")
    values = np.arange(12, dtype="float32").reshape(4, 3) / 4
    rows_module.scatter_sub_rows(table, indices, values)
    expected = start.copy()
    np.subtract.at(expected, indices, values)
    np.testing.assert_allclose(np.asarray(table.value), expected, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(table.value)[[1, 3]], start[[1, 3]])


def _compiled_row_step(table_optimizer):
    """The jitted, donated train step of a tiny `IdSafeModel` whose table
    gets `table_optimizer`, as `fit` compiles it; and the table's bytes."""
    import jax

    from keras_mixed_dim.layers.hashing_embedding import HashingEmbedding
    from keras_mixed_dim.models.id_safe import IdSafeModel
    from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer

    ids = keras.Input((2,), dtype="int32")
    embedding = HashingEmbedding(1000, 4, num_buckets=500)
    model = IdSafeModel(ids, keras.layers.Dense(1)(keras.layers.Flatten()(embedding(ids))))
    model.compile(SparseRowOptimizer(keras.optimizers.SGD(0.1), table_optimizer,
                                     learning_rate=0.1), "mse")
    x = np.array([[1, 5], [5, 7], [1, 1]], "int32")
    y = np.ones((3, 1), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no dense-gradient fallback
        model.fit(x, y, verbose=0)
    state = tuple([v.value for v in variables] for variables in (
        model.trainable_variables, model.non_trainable_variables,
        model.optimizer.variables, model.metrics_variables))
    compiled = jax.jit(model.train_step, donate_argnums=0).lower(state, (x, y)).compile()
    table_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.optimizer.table_variables)
    return compiled, table_bytes


def test_a_plain_sgd_row_step_sorts_nothing_and_updates_tables_in_place():
    """Plain SGD scatters the rows' gradients without `unique_rows` (its
    sort was the CPU step's costliest op), and the table's buffer is
    donated: the step writes it in place rather than copying the table."""
    compiled, table_bytes = _compiled_row_step("sgd")
    assert "sort(" not in compiled.as_text()
    assert compiled.memory_analysis().alias_size_in_bytes >= table_bytes
    # row-wise Adagrad needs each row's summed gradient: there, a sort
    compiled, _ = _compiled_row_step("adagrad")
    assert "sort(" in compiled.as_text()
