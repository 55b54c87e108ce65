"""Criteo raw files through tf.data (TensorFlow-only module).

Two streaming passes: `build_or_load_vocabulary` counts values (Python, with
a progress bar) and saves ranked vocabularies next to the data; then
`criteo_dataset` reads the lines again with `TextLineDataset` and maps values
to indices with in-graph hash tables.
"""

import tensorflow as tf

from keras_mixed_dim.datasets.criteo.format import NUM_CATEGORICAL
from keras_mixed_dim.datasets.criteo.format import NUM_DENSE
from keras_mixed_dim.datasets.criteo.format import is_gzip
from keras_mixed_dim.datasets.criteo.format import line_pattern
from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary  # noqa: F401
from keras_mixed_dim.datasets.criteo.vocabulary import build_or_load_vocabulary  # noqa: F401
from keras_mixed_dim.datasets.criteo.preprocessing import CriteoLookup
from keras_mixed_dim.datasets.criteo.preprocessing import CriteoPreprocessing
from keras_mixed_dim.datasets.criteo.preprocessing import dense_from_strings


def parse_lines(lines, lookup, has_label=True):
    """Parses a batch of raw lines into `({"dense", "categorical"}, label)`.

    `lookup` is a `CriteoPreprocessing` (or, as before, a `CriteoLookup`):
    the same preprocessing the serving signature runs.
    """
    width = NUM_DENSE + NUM_CATEGORICAL + (1 if has_label else 0)
    fields = tf.strings.split(lines, "\t").to_tensor(default_value="", shape=[None, width])
    offset = 1 if has_label else 0
    raw = {"dense": dense_from_strings(fields[:, offset : offset + NUM_DENSE]),
           "categorical": fields[:, offset + NUM_DENSE :]}
    if isinstance(lookup, CriteoLookup):
        lookup = CriteoPreprocessing(lookup)
    features = lookup(raw)
    if not has_label:
        return features
    label = tf.strings.to_number(fields[:, :1], tf.float32)
    return features, label


def criteo_dataset(paths, vocabulary, batch_size, has_label=True,
                   skip_malformed=False, shuffle_buffer=0, seed=0, repeat=False,
                   part=None, val_every=10):
    """A streaming tf.data pipeline over raw Criteo files.

    Args:
        paths: Raw files (TAB format), plain or gzip-compressed.
        vocabulary: A `CriteoVocabulary` from the counting pass.
        batch_size: Rows per batch.
        has_label: Whether rows start with a label.
        skip_malformed: Drop lines that do not match the format (the counting
            pass with the same flag counted them); otherwise such a line fails
            the pipeline with its text in the error.
        shuffle_buffer: Lines to shuffle over (0: keep file order).
        seed: Shuffle seed.
        repeat: Repeat forever (for step-based training).
        part: None for every line; `"train"` or `"val"` to hold out every
            `val_every`-th valid line (counted from 0) for validation.
        val_every: The hold-out period.
    """
    if part not in (None, "train", "val"):
        raise ValueError(f"`part` must be None, 'train' or 'val'. Received: {part!r}")
    if val_every < 2:
        raise ValueError(f"`val_every` must be >= 2. Received: {val_every!r}")
    preprocessing = CriteoPreprocessing(vocabulary)
    pattern = line_pattern(has_label).pattern
    # one compression type per dataset: each file gets its own, in order
    dataset = None
    for path in paths:
        lines = tf.data.TextLineDataset(
            str(path), compression_type="GZIP" if is_gzip(path) else "")
        dataset = lines if dataset is None else dataset.concatenate(lines)
    if dataset is None:
        raise ValueError("`paths` is empty: no Criteo file to read.")
    dataset = dataset.map(lambda line: tf.strings.regex_replace(line, "\r$", ""))
    dataset = dataset.filter(lambda line: tf.strings.length(line) > 0)
    if skip_malformed:
        dataset = dataset.filter(lambda line: tf.strings.regex_full_match(line, pattern))
    else:
        def check(line):
            ok = tf.strings.regex_full_match(line, pattern)
            with tf.control_dependencies(
                [tf.debugging.Assert(ok, ["malformed Criteo line:", line])]
            ):
                return tf.identity(line)

        dataset = dataset.map(check)
    if part is not None:
        held_out = part == "val"
        dataset = dataset.enumerate().filter(
            lambda i, line: tf.equal(i % val_every == 0, held_out)
        ).map(lambda i, line: line)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda lines: parse_lines(lines, preprocessing, has_label),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
