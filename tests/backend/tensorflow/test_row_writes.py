"""TensorFlow's row writes against numpy: only the named rows change, in
place, eagerly and inside a `tf.function`."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="a TensorFlow-only module")


def table():
    return keras.Variable(np.arange(24, dtype="float32").reshape(6, 4))


def test_assign_rows_changes_only_the_named_rows():
    from keras_mixed_dim.backend.tensorflow import row_writes

    variable = table()
    expected = np.array(variable.value)
    values = -np.ones((2, 4), "float32")
    row_writes.assign_rows(variable, [4, 1], values)
    expected[[4, 1]] = values
    np.testing.assert_array_equal(np.array(variable.value), expected)
    np.testing.assert_array_equal(row_writes.read_rows(variable, [1, 5]), expected[[1, 5]])


def test_write_rows_inside_a_traced_step_writes_in_place():
    import tensorflow as tf

    from keras_mixed_dim.backend.tensorflow import row_writes

    variable = table()
    expected = np.array(variable.value)

    @tf.function
    def step(rows, values):
        row_writes.write_rows(variable, rows, values)

    step(tf.constant([0, 5], tf.int32), tf.constant([[7.0] * 4, [8.0] * 4]))
    expected[0], expected[5] = 7.0, 8.0
    np.testing.assert_array_equal(np.array(variable.value), expected)
    graph = step.get_concrete_function(tf.TensorSpec([2], tf.int32),
                                       tf.TensorSpec([2, 4], tf.float32)).graph
    ops = {op.type for op in graph.get_operations()}
    # one scatter of the rows, not an assignment of the whole table
    assert "ResourceScatterUpdate" in ops and "AssignVariableOp" not in ops
    assert row_writes.WRITES_IN_LAYER and not row_writes.MAP_AHEAD


def test_a_tf_distribute_variable_is_refused_by_name():
    # a mirrored variable has no row scatter: TensorFlow would raise a bare
    # NotImplementedError from `DynamicEmbedding.update`
    import tensorflow as tf

    from keras_mixed_dim.backend.tensorflow import row_writes

    with tf.distribute.MirroredStrategy(["CPU:0"]).scope():
        variable = keras.Variable(np.zeros((6, 4), "float32"), name="tier_0")
    with pytest.raises(ValueError, match="tier_0.*MirroredVariable"):
        row_writes.assign_rows(variable, [1], np.ones((1, 4), "float32"))
    with pytest.raises(ValueError, match="tier_0.*MirroredVariable"):
        row_writes.write_rows(variable, tf.constant([1]), tf.ones((1, 4)))
    np.testing.assert_array_equal(np.array(variable.value), np.zeros((6, 4)))
