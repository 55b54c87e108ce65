"""Criteo preprocessing, written once and used by both the tf.data pipeline
and the serving signature (TensorFlow-only module).

Raw features -> DLRM inputs: the 13 integer features go through DLRM's dense
transform (missing and negative -> 0, then `log(1 + x)`); the 26 categorical
hex strings go through file-backed vocabulary tables (kept values by rank,
unknown values to hash buckets after them).
"""

import os
import pathlib

import numpy as np
import tensorflow as tf

from keras_mixed_dim.datasets.criteo.format import CATEGORICAL_NAMES
from keras_mixed_dim.datasets.criteo.format import NUM_CATEGORICAL
from keras_mixed_dim.datasets.criteo.format import NUM_DENSE
from keras_mixed_dim.datasets.lookup_table import VocabularyTable
from keras_mixed_dim.datasets.vocabulary_files import read_manifest


def transform_dense(dense):
    """DLRM's dense transform in TensorFlow: NaN (missing) and negative
    values -> 0, then `log(1 + x)`. float32 in, float32 out.

    The numpy twin is `keras_mixed_dim.datasets.criteo.format.transform_dense`.
    """
    dense = tf.convert_to_tensor(dense, tf.float32)
    dense = tf.where(tf.math.is_nan(dense), tf.zeros_like(dense), dense)
    return tf.math.log1p(tf.maximum(dense, 0.0))


def dense_from_strings(fields):
    """Raw TAB-file fields (strings, "" for missing) -> float32 with NaN for
    missing, the form a serving client sends."""
    missing = tf.equal(fields, "")
    values = tf.strings.to_number(tf.where(missing, "0", fields), tf.float32)
    return tf.where(missing, tf.fill(tf.shape(values), np.float32(np.nan)), values)


class CriteoLookup(tf.Module):
    """Maps raw categorical strings to ranked indices, OOV to hash buckets.

    Args:
        vocabulary: A `CriteoVocabulary`, or the folder of a saved one. With
            a folder (or a vocabulary that was saved or loaded, so
            `vocabulary.folder` is set) the tables read its `C*.tsv` files
            directly, never holding the values in Python: the way to export
            vocabularies of tens of millions of values. Otherwise the values
            are written to temporary files first.
    """

    def __init__(self, vocabulary):
        super().__init__()
        if isinstance(vocabulary, (str, os.PathLike)):
            folder = pathlib.Path(vocabulary)
            manifest = read_manifest(folder, CATEGORICAL_NAMES)
            num_oov_buckets = int(manifest["num_oov_buckets"])
            sources = [(folder / manifest["files"][n]["file"], manifest["files"][n]["lines"])
                       for n in CATEGORICAL_NAMES]
        else:
            folder = vocabulary.folder
            num_oov_buckets = vocabulary.num_oov_buckets
            sources = [(folder / f"{name}.tsv" if folder is not None else tokens,
                        len(tokens))
                       for name, tokens in zip(CATEGORICAL_NAMES, vocabulary.tokens)]
        self.tables = [VocabularyTable(source, num_oov_buckets, key_dtype="string",
                                       size=size) for source, size in sources]
        self.sizes = tuple(t.size + t.num_oov_buckets for t in self.tables)

    @property
    def payload_bytes(self):
        return sum(table.payload_bytes for table in self.tables)

    def __call__(self, values):
        """`values`: string tensor `(batch, 26)`; returns int32 `(batch, 26)`."""
        columns = [table(values[:, j]) for j, table in enumerate(self.tables)]
        return tf.cast(tf.stack(columns, axis=1), tf.int32)


class CriteoPreprocessing(tf.Module):
    """Raw Criteo features -> the DLRM inputs `{"dense", "categorical"}`.

    Serving inputs (`input_signature`): `dense` float32 `(batch, 13)`, the
    raw integer features with NaN for missing; `categorical` string
    `(batch, 26)`, the raw hex values ("" for missing). Without a vocabulary
    (models trained on synthetic ids) `categorical` is int32 ids, passed on
    unchanged.

    Args:
        vocabulary: The `CriteoVocabulary` the model was trained with, the
            folder it was saved to, a `CriteoLookup` built from it, or None.
    """

    def __init__(self, vocabulary=None):
        super().__init__()
        if vocabulary is None or isinstance(vocabulary, CriteoLookup):
            self.lookup = vocabulary
        else:
            self.lookup = CriteoLookup(vocabulary)
        categorical = tf.string if vocabulary is not None else tf.int32
        self.input_signature = {
            "dense": tf.TensorSpec((None, NUM_DENSE), tf.float32, name="dense"),
            "categorical": tf.TensorSpec((None, NUM_CATEGORICAL), categorical,
                                         name="categorical"),
        }
        self.vocabulary_bytes = 0 if self.lookup is None else self.lookup.payload_bytes

    def __call__(self, features):
        categorical = features["categorical"]
        if self.lookup is not None:
            categorical = self.lookup(categorical)
        return {"dense": transform_dense(features["dense"]),
                "categorical": tf.cast(categorical, tf.int32)}

    def check_model(self, model):
        """Raises `ValueError` when the model's 26 embedding tables do not
        have the vocabulary's sizes (kept values plus OOV buckets)."""
        if self.lookup is None:
            return
        from keras_mixed_dim.export.checks import embedding_input_dims

        dims = embedding_input_dims(model, [f"embedding_{f}" for f in
                                            range(NUM_CATEGORICAL)])
        for name, dim, size in zip(CATEGORICAL_NAMES, dims, self.lookup.sizes):
            if dim != size:
                raise ValueError(
                    f"The vocabulary of {name} has {size} indices (values plus OOV "
                    f"buckets) but the model's table for it has {dim} rows: the "
                    "vocabulary does not belong to this model.")

    def warmup_inputs(self, batch=4):
        """A small request for TF Serving's warm-up replay: each feature's
        most frequent value (read from the vocabulary files)."""
        dense = np.array([[1, 2, 0, np.nan, 5, 0, 1, 3, 4, 1, 0, 2, 7]] * batch,
                         np.float32)
        if self.lookup is None:
            return {"dense": dense,
                    "categorical": np.zeros((batch, NUM_CATEGORICAL), np.int32)}
        first = []
        for table in self.lookup.tables:
            with open(table.path, "rb") as file:
                line = file.readline()
            first.append(line.split(b"\t", 1)[0] if line else b"")
        return {"dense": dense, "categorical": np.array([first] * batch, dtype=object)}
