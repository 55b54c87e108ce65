"""MovieLens preprocessing for serving: raw user / item ids -> the indices
the MF / NCF models take (TensorFlow-only module).

Known ids map to their rank in the training vocabulary, unknown ids to the
out-of-vocabulary index `len(vocabulary)`, exactly as
`keras_mixed_dim.datasets.movielens.Vocabulary.lookup` does in training.
"""

import numpy as np
import tensorflow as tf

from keras_mixed_dim.datasets.lookup_table import VocabularyTable

EMBEDDING_NAMES = {"user": ("user_embedding", "user_bias"),
                   "item": ("item_embedding", "item_bias")}


class MovieLensPreprocessing(tf.Module):
    """Raw `user_id` / `item_id` -> `{"user", "item"}` int32 indices.

    Serving inputs (`input_signature`): `user_id` and `item_id`, `(batch,)`
    int64 raw ids (strings when the vocabularies hold strings).

    Args:
        users, items: The training vocabularies: a vocabulary file
            (`value TAB count` lines) or raw ids in index order.
        key_dtype: `"int64"` or `"string"` (inferred from raw ids; needed
            with files, default `"int64"`).
    """

    def __init__(self, users, items, key_dtype=None):
        super().__init__()
        if key_dtype is None and not isinstance(users, (str, bytes)) \
                and not hasattr(users, "__fspath__"):
            first = next(iter(users), None)
            key_dtype = "string" if isinstance(first, (str, bytes)) else "int64"
        key_dtype = key_dtype or "int64"
        self.user_lookup = VocabularyTable(_plain(users), 1, key_dtype)
        self.item_lookup = VocabularyTable(_plain(items), 1, key_dtype)
        dtype = tf.string if key_dtype == "string" else tf.int64
        self.input_signature = {
            "user_id": tf.TensorSpec((None,), dtype, name="user_id"),
            "item_id": tf.TensorSpec((None,), dtype, name="item_id"),
        }
        self.vocabulary_bytes = (self.user_lookup.payload_bytes
                                 + self.item_lookup.payload_bytes)
        self.sizes = {"user": self.user_lookup.size + 1, "item": self.item_lookup.size + 1}

    def __call__(self, features):
        return {"user": tf.cast(self.user_lookup(features["user_id"]), tf.int32),
                "item": tf.cast(self.item_lookup(features["item_id"]), tf.int32)}

    def check_model(self, model):
        """Raises `ValueError` when the model's user / item tables do not have
        the vocabularies' sizes (ids plus the OOV index). Checks the layers
        the package's MF / NCF builders name (`user_embedding`, `user_bias`,
        `item_embedding`, `item_bias`); a model without them is not checked."""
        from keras_mixed_dim.export.checks import embedding_input_dims

        for key, names in EMBEDDING_NAMES.items():
            present = [n for n in names if any(l.name == n for l in model.layers)]
            if not present:
                continue
            for name, dim in zip(present, embedding_input_dims(model, present)):
                if dim != self.sizes[key]:
                    raise ValueError(
                        f"The {key} vocabulary has {self.sizes[key]} indices (ids plus "
                        f"the OOV index) but the model's {name!r} has {dim} rows: the "
                        "vocabulary does not belong to this model.")


def _plain(source):
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        return source
    return [t.decode() if isinstance(t, bytes) else t.item() if hasattr(t, "item")
            else t for t in source]
