"""In-graph vocabulary lookup (TensorFlow-only module), shared by the tf.data
pipelines and the SavedModel exports so both map values identically.

The tables read vocabulary files (`value TAB count` per line, line `i` is
index `i`; see `keras_mixed_dim.datasets.vocabulary_files`) through
`tf.lookup.TextFileInitializer`. A SavedModel holding such a table ships the
file as an asset instead of embedding the values as graph constants, so
vocabularies of any size export (a `saved_model.pb` cannot exceed 2 GiB).
"""

import os
import pathlib
import tempfile

import tensorflow as tf

from keras_mixed_dim.io_utils import file_mode

# Bytes per kept value beside its key: the int64 index the table stores.
# Hash-table overhead comes on top and depends on the implementation.
INDEX_BYTES = 8


def write_token_file(tokens, folder, name="vocabulary"):
    """Writes `tokens` one per line (`value TAB 0`) to `folder/NAME.tsv`."""
    path = pathlib.Path(folder) / f"{name}.tsv"
    with open(path, "w", encoding="utf-8", newline="") as file:
        for number, token in enumerate(tokens):
            text = token.decode() if isinstance(token, bytes) else str(token)
            if "\t" in text or "\n" in text or "\r" in text:
                raise ValueError(
                    f"Vocabulary value {number} ({text!r}) holds a TAB or line break.")
            file.write(f"{text}\t0\n")
    os.chmod(path, file_mode())
    return path


class VocabularyTable(tf.Module):
    """Raw values -> ranked indices; unknown values -> `size + bucket`.

    A `tf.lookup.StaticVocabularyTable` initialised from a vocabulary file.
    Unknown values go to `num_oov_buckets` buckets after the kept values
    (the last indices, so a `MixedDimEmbedding` puts them in its smallest
    block): bucket `Fingerprint64(value) mod num_oov_buckets`, i.e.
    `tf.strings.to_hash_bucket_fast(value, num_oov_buckets)`; integer keys
    are hashed as their decimal strings.

    Args:
        source: A vocabulary file (`value TAB count` lines, line `i` is index
            `i`), or the raw values in index order (strings or integers),
            which are written to a temporary file first.
        num_oov_buckets: Buckets for unknown values (>= 1).
        key_dtype: `"string"` or `"int64"`; for a file, defaults to string;
            for values, inferred from them.
        size: The file's number of lines, when known (saves counting them).

    Raises:
        ValueError: A value given twice (named, with its two positions or
            line numbers), and the file when `source` is one.
    """

    def __init__(self, source, num_oov_buckets=1, key_dtype=None, size=None):
        super().__init__()
        if int(num_oov_buckets) < 1:
            raise ValueError(
                f"`num_oov_buckets` must be >= 1. Received: {num_oov_buckets!r}")
        self.num_oov_buckets = int(num_oov_buckets)
        if isinstance(source, (str, os.PathLike)):
            path = pathlib.Path(source)
            if key_dtype is None:
                key_dtype = "string"
        else:
            tokens = list(source)
            if key_dtype is None:
                key_dtype = ("string" if not tokens
                             or isinstance(tokens[0], (str, bytes)) else "int64")
            _check_distinct(tokens)
            # kept alive with the table: a SavedModel copies the file as an
            # asset when it is written, which can be long after this call
            self._temporary = tempfile.TemporaryDirectory(prefix="vocabulary-")
            path = write_token_file(tokens, self._temporary.name)
            size = len(tokens)
        if key_dtype not in ("string", "int64"):
            raise ValueError(f"`key_dtype` must be 'string' or 'int64'. "
                             f"Received: {key_dtype!r}")
        self.string_keys = key_dtype == "string"
        self.path = path
        key_bytes = 0
        if size is None or self.string_keys:
            size = 0
            with open(path, "rb") as file:
                for line in file:
                    size += 1
                    key_bytes += len(line.split(b"\t", 1)[0])
        self.size = size
        self.payload_bytes = (key_bytes if self.string_keys else 8 * size) + \
            INDEX_BYTES * size
        if size == 0:
            # TensorFlow has no empty table: every value is unknown, hashed
            # exactly as StaticVocabularyTable hashes unknown values
            self.table = None
            return
        initializer = tf.lookup.TextFileInitializer(
            str(path), tf.string if self.string_keys else tf.int64, 0,
            tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, delimiter="\t",
            vocab_size=size)
        try:
            self.table = tf.lookup.StaticVocabularyTable(
                initializer, num_oov_buckets=self.num_oov_buckets)
        except tf.errors.FailedPreconditionError:
            # TensorFlow's own error ("different value for same key") names
            # neither the file nor the value: find them
            _check_distinct_file(path, self.string_keys)
            raise

    def __call__(self, values):
        """int64 indices of `values`, same shape."""
        if self.table is None:
            values = tf.convert_to_tensor(values)
            text = values if values.dtype == tf.string else tf.strings.as_string(values)
            return tf.strings.to_hash_bucket_fast(text, self.num_oov_buckets)
        return self.table.lookup(values)


def _key_text(token):
    return token.decode() if isinstance(token, bytes) else str(token)


def _check_distinct(tokens):
    """Raises a ValueError naming the first value given twice (as the table
    would store it: its text)."""
    first = {}
    for number, token in enumerate(tokens):
        text = _key_text(token)
        if text in first:
            raise ValueError(
                f"Vocabulary values must be distinct: {text!r} is value "
                f"{first[text]} and value {number} of `source`.")
        first[text] = number


def _check_distinct_file(path, string_keys):
    """Raises a ValueError naming `path`, the value and its two line numbers
    when a key occurs twice (integer keys compared as numbers)."""
    first = {}
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            key = line.rstrip(b"\r\n").split(b"\t", 1)[0]
            if not string_keys:
                try:
                    key = int(key)
                except ValueError:
                    continue
            if key in first:
                shown = key.decode(errors="replace") if string_keys else key
                raise ValueError(
                    f"{path}: vocabulary values must be distinct; {shown!r} is on "
                    f"line {first[key]} and line {number}.")
            first[key] = number
