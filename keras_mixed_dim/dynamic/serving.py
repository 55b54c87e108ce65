"""Serving-time preprocessing for models with `DynamicEmbedding` layers
(TensorFlow only).

`DynamicServing(layers)` snapshots each layer's id map into a
`key TAB slot TAB tag` file and serves it as two
`tf.lookup.StaticHashTable`s over that file (a SavedModel ships it as an
asset); keys not in the map get slot -1 and read the fallback, whose bucket is
hashed in the serving graph from the key's pieces with stock ops
(`keras_mixed_dim.layers.hashes`, bit for bit the host's numpy hash). String
features are hashed to int64 with `tf.strings.to_hash_bucket_fast`, as
`update` hashes them while training. The snapshot is taken when the module
is built, so an export made mid-training answers as the model did at that
step, however the map changes later.
"""

import os
import pathlib
import tempfile

import numpy as np
import tensorflow as tf

from keras_mixed_dim.dynamic.id_map import PIECE_BITS
from keras_mixed_dim.io_utils import file_mode
from keras_mixed_dim.layers import hashes


def write_id_map(layer, path):
    """Writes `layer`'s admitted keys as `key TAB slot TAB tag` lines
    (written to a temporary name, then renamed)."""
    id_map = layer.id_map
    slots = np.flatnonzero(id_map.used)
    path = pathlib.Path(path)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="ascii", newline="") as file:
        for key, slot, tag in zip(id_map.keys[slots], slots, id_map.tags[slots]):
            file.write(f"{int(key)}\t{int(slot)}\t{int(tag)}\n")
    os.chmod(partial, file_mode())
    os.replace(partial, path)
    return path, int(slots.size)


class DynamicServing(tf.Module):
    """Raw features -> the packed int32 ids of each `DynamicEmbedding`.

    Args:
        layers: `{feature name: DynamicEmbedding}`; the feature name is both
            the raw input's name and the model input it feeds.
        key_dtypes: Optional `{feature name: "int64" or "string"}` (default
            int64).

    Attributes:
        input_signature: `{feature: tf.TensorSpec((None,), dtype)}`, the
            default signature of `export_for_serving`.
    """

    def __init__(self, layers, key_dtypes=None):
        super().__init__()
        key_dtypes = dict(key_dtypes or {})
        # kept alive with the module: the SavedModel copies the files as
        # assets when it is written
        self._temporary = tempfile.TemporaryDirectory(prefix="dynamic-id-map-")
        self.features = sorted(layers)
        self.string_keys = {}
        self.slot_tables, self.tag_tables = {}, {}
        self.hash_params = {n: layers[n]._hash for n in self.features}
        self.fallback_buckets = {n: layers[n].plan.fallback_range for n in self.features}
        self.input_signature = {}
        self.vocabulary_bytes = 0
        for name in self.features:
            dtype = key_dtypes.get(name, "int64")
            if dtype not in ("int64", "string"):
                raise ValueError(f"`key_dtypes[{name!r}]` must be 'int64' or 'string'. "
                                 f"Received: {dtype!r}")
            self.string_keys[name] = dtype == "string"
            self.input_signature[name] = tf.TensorSpec(
                (None,), tf.string if dtype == "string" else tf.int64, name=name)
            path, size = write_id_map(layers[name], pathlib.Path(self._temporary.name)
                                      / f"{name}_id_map.tsv")
            self.vocabulary_bytes += 24 * size
            if size == 0:
                self.slot_tables[name] = self.tag_tables[name] = None
                continue
            self.slot_tables[name], self.tag_tables[name] = (
                tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                    str(path), tf.int64, 0, tf.int64, column, delimiter="\t",
                    vocab_size=size), default)
                for column, default in ((1, -1), (2, 0)))

    def keys(self, name, values):
        """Feature `name`'s raw ids as int64 keys in the graph, as
        `raw_keys` gives them on the host (strings hashed with
        `tf.strings.to_hash_bucket_fast(s, 2**63 - 1)`)."""
        values = tf.convert_to_tensor(values)
        if self.string_keys[name]:
            return tf.strings.to_hash_bucket_fast(values, 2**63 - 1)
        return tf.cast(values, tf.int64)

    def __call__(self, features):
        outputs = {}
        for name in self.features:
            keys = self.keys(name, features[name])
            if self.slot_tables[name] is None:
                slots = tf.fill(tf.shape(keys), tf.constant(-1, tf.int64))
                tags = tf.zeros_like(keys)
            else:
                slots = self.slot_tables[name].lookup(keys)
                tags = self.tag_tables[name].lookup(keys)
            pieces, shift = [], 0
            for width in PIECE_BITS:
                pieces.append(tf.bitwise.bitwise_and(
                    tf.bitwise.right_shift(keys, shift), (1 << width) - 1))
                shift += width
            pieces = [tf.cast(p, tf.int32) for p in pieces]
            buckets = hashes.buckets(pieces, self.hash_params[name],
                                     self.fallback_buckets[name])
            outputs[name] = tf.stack([tf.cast(slots, tf.int32), tf.cast(tags, tf.int32),
                                      tf.cast(buckets, tf.int32)], axis=-1)
        return outputs
