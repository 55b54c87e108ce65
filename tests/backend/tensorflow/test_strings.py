"""`fingerprint_keys` gives the keys the serving graph computes: those of
Keras's `Hashing` layer (Fingerprint64 bucketed, TensorFlow backend)."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="a TensorFlow-only module")


def test_keys_match_keras_hashing_and_keep_the_shape():
    from keras_mixed_dim.backend.tensorflow.strings import fingerprint_keys

    text = np.array([[b"apple", b"pear", b""], [b"apple", "caf\u00e9".encode(), b"x" * 300]],
                    dtype=object)
    keys = fingerprint_keys(text)
    assert keys.dtype == np.int64 and keys.shape == (2, 3)
    hashing = keras.layers.Hashing(num_bins=2**63 - 1)
    expected = keras.ops.convert_to_numpy(hashing([s.decode() for s in text.ravel()])).reshape(2, 3)
    np.testing.assert_array_equal(keys, expected)
    assert keys[0, 0] == keys[1, 0] and len(set(keys.ravel().tolist())) == 5
    assert (keys >= 0).all()
