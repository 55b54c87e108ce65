"""Vocabulary sets on disk: written whole, verified against their manifest."""

import hashlib

import pytest

from keras_mixed_dim.datasets.vocabulary_files import VocabularyFileError
from keras_mixed_dim.datasets.vocabulary_files import read_column
from keras_mixed_dim.datasets.vocabulary_files import read_manifest
from keras_mixed_dim.datasets.vocabulary_files import write_vocabulary_files


def test_a_vocabulary_longer_than_one_write_chunk_is_hashed_whole(tmp_path):
    # 65,536 lines go to disk per chunk: 2.5 chunks, so two flushed ones
    # and a remainder all take part in the fingerprint
    n = 65536 * 5 // 2
    manifest = write_vocabulary_files(
        tmp_path / "set", {"big": ((f"v{i}", n - i) for i in range(n))})
    path = tmp_path / "set" / "big.tsv"
    assert manifest["files"]["big"]["lines"] == n
    assert manifest["files"]["big"]["sha256"] == hashlib.sha256(
        path.read_bytes()).hexdigest()
    read_manifest(tmp_path / "set")
    values, counts = read_column(tmp_path / "set", manifest, "big")
    assert values[65536] == "v65536" and counts[-1] == 1 and len(values) == n
    # a change inside the first flushed chunk is caught
    data = bytearray(path.read_bytes())
    data[1] = ord("w")
    path.write_bytes(bytes(data))
    with pytest.raises(VocabularyFileError, match="big.tsv does not match"):
        read_manifest(tmp_path / "set")


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\tb", "tail\r"])
def test_values_with_a_tab_or_line_break_are_refused(tmp_path, value):
    # a "\r" would split the line for readers of universal newlines
    # (read_column) and shift every later index by one
    with pytest.raises(ValueError, match=r"Vocabulary 'f' value 1 \(.*\) holds a TAB "
                                         "or line break"):
        write_vocabulary_files(tmp_path / "set", {"f": [("ok", 2), (value, 1)]})
    assert not (tmp_path / "set").exists()
