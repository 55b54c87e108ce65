"""TensorFlow-only pieces: in-place count updates, the dense-gradient
workaround for tf.distribute, and the multi-worker `fit` shim. Importing
anything here imports TensorFlow."""
