"""In-graph vocabulary lookup (TensorFlow-only module), shared by the Criteo
tf.data pipeline and the SavedModel export so both map values identically."""

import tensorflow as tf

# Bytes per kept value beside its key: the int64 index the table stores.
# Hash-table overhead comes on top and depends on the implementation.
INDEX_BYTES = 8


class VocabularyTable(tf.Module):
    """Raw values -> ranked indices; unknown values -> `len(tokens) + bucket`.

    Args:
        tokens: Raw values in index order (strings or integers).
        num_oov_buckets: Buckets for unknown values; strings are hashed into
            them with `to_hash_bucket_fast`, integers by `floormod`.
    """

    def __init__(self, tokens, num_oov_buckets=1):
        super().__init__()
        tokens = list(tokens)
        self.size = len(tokens)
        self.num_oov_buckets = int(num_oov_buckets)
        self.string_keys = not tokens or isinstance(tokens[0], (str, bytes))
        dtype = tf.string if self.string_keys else tf.int64
        if tokens:
            keys = tf.constant(tokens, dtype)
            values = tf.range(len(tokens), dtype=tf.int64)
        else:  # a table needs one entry; this one never matches a real index
            keys = tf.constant([""] if self.string_keys else [-1], dtype)
            values = tf.constant([-1], tf.int64)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, values), default_value=-1)
        key_bytes = (sum(len(str(t).encode()) for t in tokens) if self.string_keys
                     else 8 * len(tokens))
        self.payload_bytes = key_bytes + INDEX_BYTES * len(tokens)

    def __call__(self, values):
        """int64 indices of `values`, same shape."""
        index = self.table.lookup(values)
        if self.string_keys:
            bucket = tf.strings.to_hash_bucket_fast(values, self.num_oov_buckets)
        else:
            bucket = tf.math.floormod(values, self.num_oov_buckets)
        return tf.where(index >= 0, index, self.size + bucket)
