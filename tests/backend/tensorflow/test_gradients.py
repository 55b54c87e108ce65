"""`dense_gradient` turns a gather's `IndexedSlices` gradient into the equal
dense tensor; `read_variables` makes variables plain tensors."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="a TensorFlow-only module")


def test_a_gathered_table_gets_the_same_gradient_dense():
    import tensorflow as tf

    from keras_mixed_dim.backend.tensorflow.gradients import dense_gradient

    table = tf.Variable(np.arange(12, dtype="float32").reshape(4, 3))
    rows = tf.constant([2, 0, 2])
    upstream = tf.constant(np.arange(9, dtype="float32").reshape(3, 3))
    with tf.GradientTape(persistent=True) as tape:
        plain = tf.reduce_sum(tf.gather(table, rows) * upstream)
        dense = tf.reduce_sum(tf.gather(dense_gradient(table), rows) * upstream)
    sparse_grad = tape.gradient(plain, table)
    dense_grad = tape.gradient(dense, table)
    assert isinstance(sparse_grad, tf.IndexedSlices)
    assert isinstance(dense_grad, tf.Tensor)
    expected = np.zeros((4, 3), "float32")
    np.add.at(expected, [2, 0, 2], upstream.numpy())
    np.testing.assert_array_equal(dense_grad.numpy(), expected)
    np.testing.assert_array_equal(tf.convert_to_tensor(sparse_grad).numpy(), expected)
    np.testing.assert_array_equal(dense_gradient(table).numpy(), table.numpy())


def test_read_variables_gives_tensors_of_the_same_values():
    import tensorflow as tf

    from keras_mixed_dim.backend.tensorflow.gradients import read_variables

    variable = tf.Variable([1.0, 2.0])
    read, = read_variables((variable,))
    assert isinstance(read, tf.Tensor) and not isinstance(read, tf.Variable)
    np.testing.assert_array_equal(read.numpy(), variable.numpy())
