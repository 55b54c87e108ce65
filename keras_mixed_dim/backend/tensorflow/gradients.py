"""Gradient helpers: a dense gradient for gathered tables, variable reads
for custom gradients (TensorFlow-only module)."""

import tensorflow as tf


def dense_gradient(x):
    """Identity whose gradient is always a dense tensor.

    On TensorFlow a gather's gradient is an `IndexedSlices`; behind a concat
    it is split into per-part slices, some of them empty when a replica's
    batch never touches a part, and `tf.distribute`'s all-gather of an empty
    `IndexedSlices` crashes the process (segfault in RingGatherer, TF 2.21).
    The tables this wraps are small, so a dense gradient costs little.
    """
    @tf.custom_gradient
    def identity(value):
        def gradient(upstream):
            return tf.convert_to_tensor(upstream)

        return tf.identity(value), gradient

    return identity(x)


def read_variables(operands):
    """The operands as plain tensors.

    A variable read inside a `tf.custom_gradient` must have its gradient
    returned through the `variables` argument; reading every operand first
    makes them ordinary inputs of the function.
    """
    return tuple(tf.identity(t) for t in operands)
