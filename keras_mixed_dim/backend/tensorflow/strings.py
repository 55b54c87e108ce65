"""String ids hashed to int64 keys as the serving graph hashes them
(TensorFlow-only module).

`DynamicEmbedding`'s host side takes string ids on every Keras backend, but
their keys must equal what `tf.strings.to_hash_bucket_fast` (Fingerprint64)
gives in the exported serving graph, so the host hashes with that op too.
"""

import numpy as np
import tensorflow as tf


def fingerprint_keys(text):
    """int64 keys of a numpy array of `bytes` objects:
    `tf.strings.to_hash_bucket_fast(s, 2**63 - 1)`, shaped like `text`."""
    hashed = tf.strings.to_hash_bucket_fast(tf.constant(text, tf.string), 2**63 - 1)
    return hashed.numpy().astype(np.int64).reshape(np.shape(text))
