"""MovieLens vocabularies on disk: one verified set, written as a whole."""

import numpy as np
import pytest

from keras_mixed_dim.datasets.movielens import Vocabulary
from keras_mixed_dim.datasets.movielens.vocabulary import load_vocabularies
from keras_mixed_dim.datasets.movielens.vocabulary import save_vocabularies
from keras_mixed_dim.datasets.vocabulary_files import VocabularyFileError


def vocabularies(users, items):
    return (Vocabulary.from_values(np.asarray(users)), Vocabulary.from_values(np.asarray(items)))


def test_integer_ids_round_trip_exactly(tmp_path):
    users, items = vocabularies([5, 5, 2**63 - 1, -7], [1, 2, 2, 3])
    save_vocabularies(tmp_path / "v", users, items, meta={"model_sha256": "x"})
    loaded_users, loaded_items, manifest = load_vocabularies(tmp_path / "v")
    assert loaded_users.tokens.dtype == np.int64
    np.testing.assert_array_equal(loaded_users.tokens, users.tokens)
    np.testing.assert_array_equal(loaded_items.counts, items.counts)
    assert manifest["meta"] == {"model_sha256": "x"} and manifest["key_dtype"] == "int64"
    ids = np.array([5, -7, 99])
    np.testing.assert_array_equal(loaded_users.lookup(ids), users.lookup(ids))


def test_string_ids_round_trip(tmp_path):
    users, items = vocabularies(["a", "b", "b"], ["x y", "z"])
    save_vocabularies(tmp_path / "v", users, items)
    loaded_users, loaded_items, manifest = load_vocabularies(tmp_path / "v")
    assert manifest["key_dtype"] == "string"
    assert list(loaded_users.tokens) == list(users.tokens)
    assert list(loaded_items.tokens) == list(items.tokens)


def test_ids_that_cannot_be_stored_are_refused(tmp_path):
    users, items = vocabularies(["a\tb"], ["x"])
    with pytest.raises(ValueError, match="TAB or line break"):
        save_vocabularies(tmp_path / "v", users, items)
    assert not (tmp_path / "v").exists()
    users, items = vocabularies(["a"], [1])
    with pytest.raises(ValueError, match="all strings or all integers"):
        save_vocabularies(tmp_path / "v", users, items)


def test_interrupted_save_keeps_the_previous_set(tmp_path):
    old_users, old_items = vocabularies([1, 2, 3], [10, 20])
    save_vocabularies(tmp_path / "v", old_users, old_items)
    new_users, new_items = vocabularies([4, 5], [30])

    def killed(name):
        if name == "user":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_vocabularies(tmp_path / "v", new_users, new_items, write_hook=killed)
    users, items, _ = load_vocabularies(tmp_path / "v")
    np.testing.assert_array_equal(users.tokens, old_users.tokens)
    np.testing.assert_array_equal(items.tokens, old_items.tokens)


def test_an_edited_file_is_refused(tmp_path):
    users, items = vocabularies([1, 2, 3], [10, 20])
    save_vocabularies(tmp_path / "v", users, items)
    (tmp_path / "v" / "item.tsv").write_text("10\t1\n")
    with pytest.raises(VocabularyFileError, match="item.tsv does not match"):
        load_vocabularies(tmp_path / "v")
    (tmp_path / "v" / "item.tsv").unlink()
    with pytest.raises(VocabularyFileError, match="item.tsv is missing"):
        load_vocabularies(tmp_path / "v")
