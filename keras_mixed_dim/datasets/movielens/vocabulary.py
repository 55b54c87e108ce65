"""The user / item vocabularies of a MovieLens model on disk (numpy only).

A vocabulary set (`keras_mixed_dim.datasets.vocabulary_files`) with
`user.tsv` and `item.tsv` (raw id TAB count, in index order), written as a
whole and verified on load; the serving export ships the files as assets.
"""

import numpy as np

from keras_mixed_dim.datasets.movielens.ratings import Vocabulary
from keras_mixed_dim.datasets.vocabulary_files import VocabularyFileError
from keras_mixed_dim.datasets.vocabulary_files import read_column
from keras_mixed_dim.datasets.vocabulary_files import read_manifest
from keras_mixed_dim.datasets.vocabulary_files import write_vocabulary_files

NAMES = ("user", "item")


def _plain(token):
    if isinstance(token, bytes):
        return token.decode()
    return token.item() if hasattr(token, "item") else token


def save_vocabularies(folder, users, items, meta=None, write_hook=None):
    """Writes the user and item `Vocabulary`s as one set.

    Args:
        folder: Target folder (replaced whole if it exists).
        users, items: `Vocabulary` objects (raw ids in index order).
        meta: JSON-serializable facts stored with the set, e.g. the
            fingerprint of the model the vocabularies belong to.
    """
    kinds = set()
    columns = {}
    for name, vocabulary in zip(NAMES, (users, items)):
        tokens = [_plain(t) for t in vocabulary.tokens]
        kinds |= {"string" if isinstance(t, str) else "int64" for t in tokens}
        columns[name] = zip(tokens, np.asarray(vocabulary.counts).tolist())
    if len(kinds) > 1:
        raise ValueError("User and item ids must all be strings or all integers.")
    return write_vocabulary_files(
        folder, columns,
        header={"key_dtype": kinds.pop() if kinds else "int64", "meta": meta or {}},
        write_hook=write_hook)


def load_vocabularies(folder):
    """`(users, items, manifest)` of a set written by `save_vocabularies`.

    Raises:
        FileNotFoundError: No set at `folder`.
        VocabularyFileError: An incomplete or altered set.
    """
    manifest = read_manifest(folder, NAMES)
    result = []
    for name in NAMES:
        values, counts = read_column(folder, manifest, name)
        if manifest.get("key_dtype") == "int64":
            try:
                tokens = np.array([int(v) for v in values], dtype=np.int64)
            except (ValueError, OverflowError) as error:
                raise VocabularyFileError(f"{folder}/{name}.tsv: {error}") from error
        else:
            tokens = np.array(values, dtype=object)
        result.append(Vocabulary(tokens, np.array(counts, dtype=np.int64)))
    return result[0], result[1], manifest
