"""The counting pass and the ranked, bounded vocabularies."""

import numpy as np
import pytest
from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary
from keras_mixed_dim.datasets.criteo.vocabulary import build_or_load_vocabulary
from keras_mixed_dim.datasets.criteo.vocabulary import count_values


def test_counting_pass(raw_file):
    result = count_values([raw_file], progress=False)
    assert result.rows == 4 and result.skipped == 0
    assert result.counters[0] == {"68fd1e64": 3, "80e26c9b": 1}
    assert result.counters[25] == {"68fd1e64": 2, "": 1, "fb936136": 1}


def test_vocabulary_ranks_thresholds_and_buckets(raw_file):
    counters = count_values([raw_file], progress=False).counters
    vocab = CriteoVocabulary.from_counts(counters, min_count=2, num_oov_buckets=3)
    assert vocab.tokens[25] == ("68fd1e64",)  # "" and fb936136 seen once each
    assert vocab.dropped[25] == 2
    assert vocab.sizes[25] == 1 + 3
    np.testing.assert_array_equal(vocab.index_counts(25), [2, 0, 0, 0])
    capped = CriteoVocabulary.from_counts(counters, top_k=1)
    assert capped.tokens[0] == ("68fd1e64",)
    # ties broken by value: "" < "68fd1e64" < "fb936136"
    full = CriteoVocabulary.from_counts(counters)
    assert full.tokens[25] == ("68fd1e64", "", "fb936136")
    assert full.bytes == sum(
        sum(len(v) for v in t) + 8 * len(t) for t in full.tokens
    )
    with pytest.raises(ValueError, match="num_oov_buckets"):
        CriteoVocabulary.from_counts(counters, num_oov_buckets=0)


def test_vocabulary_files_round_trip_and_are_reused(raw_file, tmp_path):
    folder = tmp_path / "vocab"
    vocab, meta = build_or_load_vocabulary([raw_file], folder, min_count=1,
                                           progress=False)
    assert (folder / "C1.tsv").read_text().splitlines()[0] == "68fd1e64\t3"
    assert meta["rows"] == 4
    again, _ = build_or_load_vocabulary([raw_file], folder, min_count=1,
                                        progress=False)
    assert again.tokens == vocab.tokens
    assert [list(c) for c in again.counts] == [list(c) for c in vocab.counts]
    # other settings: counted again, not reused
    other, _ = build_or_load_vocabulary([raw_file], folder, min_count=2,
                                        progress=False)
    assert other.tokens[25] == ("68fd1e64",)


# --- vocabulary sets on disk: atomic, verified, shared folders ---------------

import os  # noqa: E402

from keras_mixed_dim.datasets.vocabulary_files import VocabularyFileError  # noqa: E402


def small_vocabulary(rows):
    counters = count_values([rows], progress=False).counters
    return CriteoVocabulary.from_counts(counters, num_oov_buckets=2)


def test_save_load_round_trip_with_empty_value(raw_file, tmp_path):
    vocabulary = small_vocabulary(raw_file)
    assert "" in vocabulary.tokens[25]
    vocabulary.save(tmp_path / "v", meta={"model_sha256": "abc"})
    loaded = CriteoVocabulary.load(tmp_path / "v")
    assert loaded.tokens == vocabulary.tokens
    assert all((a == b).all() for a, b in zip(loaded.counts, vocabulary.counts))
    assert loaded.folder == tmp_path / "v"
    assert CriteoVocabulary.read_header(tmp_path / "v")["meta"] == {"model_sha256": "abc"}


def test_interrupted_save_keeps_the_previous_set_whole(raw_file, tmp_path, criteo_row):
    first = small_vocabulary(raw_file)
    first.save(tmp_path / "v")
    other_rows = tmp_path / "other.txt"
    other_rows.write_text(criteo_row(0, [1] * 13, ["0000000%d" % (i % 10) for i in range(26)])
                          + "\n")
    second = small_vocabulary(other_rows)

    def killed(name):
        if name == "C2":  # C1 written, the rest and the manifest not
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        second.save(tmp_path / "v", write_hook=killed)
    assert CriteoVocabulary.load(tmp_path / "v").tokens == first.tokens
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_changed_file_is_detected_and_rebuilt(raw_file, tmp_path):
    vocabulary, _ = build_or_load_vocabulary([raw_file], folder=tmp_path / "v",
                                             progress=False)
    c1 = tmp_path / "v" / "C1.tsv"
    c1.write_text(c1.read_text().splitlines()[0] + "\n")  # half of C1 lost
    with pytest.raises(VocabularyFileError, match="C1.tsv does not match"):
        CriteoVocabulary.load(tmp_path / "v")
    with pytest.warns(UserWarning, match="Ignoring the vocabulary"):
        rebuilt, _ = build_or_load_vocabulary([raw_file], folder=tmp_path / "v",
                                              progress=False)
    assert rebuilt.tokens == vocabulary.tokens
    CriteoVocabulary.load(tmp_path / "v")  # whole again


def test_a_set_of_the_old_format_is_rebuilt(raw_file, tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "vocabulary.json").write_text('{"num_oov_buckets": 1, "dropped": []}')
    with pytest.warns(UserWarning, match="older version"):
        vocabulary, meta = build_or_load_vocabulary([raw_file], folder=folder,
                                                    progress=False)
    assert meta["rows"] == 4 and CriteoVocabulary.load(folder).tokens == vocabulary.tokens


def test_empty_data_is_an_error_and_caches_nothing(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="No valid Criteo rows in .*empty.txt"):
        build_or_load_vocabulary([empty], folder=tmp_path / "v", progress=False)
    assert not (tmp_path / "v").exists()
    bad = tmp_path / "bad.txt"
    bad.write_text("not a criteo line\n")
    with pytest.raises(ValueError, match=r"1 malformed lines skipped"):
        build_or_load_vocabulary([bad], folder=tmp_path / "w", skip_malformed=True,
                                 progress=False)
    assert not (tmp_path / "w").exists()


def test_non_utf8_bytes_are_a_malformed_line(raw_file, tmp_path):
    data = raw_file.read_bytes().splitlines(keepends=True)
    path = tmp_path / "latin.txt"
    path.write_bytes(data[0] + data[1].replace(b"80e26c9b", b"80e2\xe96c9", 1) + data[2])
    with pytest.raises(ValueError, match=r"latin.txt:2: not valid UTF-8 \(byte 0xe9"):
        count_values([path], progress=False)
    result = count_values([path], skip_malformed=True, progress=False)
    assert result.rows == 2 and result.skipped == 1


def test_unwritable_data_folder_falls_back_to_the_user_cache(raw_file, tmp_path,
                                                            monkeypatch):
    """A shared data folder that this user cannot write (root bypasses
    permission bits, so the refusal is simulated at the write)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    beside = raw_file.with_name(raw_file.name + ".vocab")
    from keras_mixed_dim.datasets.criteo import vocabulary as module

    real = module.write_vocabulary_files

    def refuse_beside(folder, *args, **kwargs):
        if os.path.abspath(folder) == os.path.abspath(beside):
            raise PermissionError(13, "Permission denied", str(folder))
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(module, "write_vocabulary_files", refuse_beside)
    vocabulary, _ = build_or_load_vocabulary([raw_file], progress=False)
    assert not beside.exists()
    cached = list((tmp_path / "cache" / "keras_mixed_dim" / "criteo").iterdir())
    assert len(cached) == 1 and vocabulary.folder == cached[0]
    # the next run finds it there without counting again
    monkeypatch.setattr(module, "count_values", lambda *a, **k: 1 / 0)
    again, _ = build_or_load_vocabulary([raw_file], progress=False)
    assert again.tokens == vocabulary.tokens


def test_vocabulary_files_get_the_umask_modes(raw_file, tmp_path):
    old = os.umask(0o027)
    try:
        small_vocabulary(raw_file).save(tmp_path / "v")
    finally:
        os.umask(old)
    assert (tmp_path / "v").stat().st_mode & 0o777 == 0o750
    for path in (tmp_path / "v").iterdir():
        assert path.stat().st_mode & 0o777 == 0o640, path


def test_gzip_files_are_read_as_their_lines(raw_file, tmp_path):
    import gzip

    # named .txt: the magic bytes decide, not the name
    packed = tmp_path / "train_gz.txt"
    packed.write_bytes(gzip.compress(raw_file.read_bytes()))
    plain = count_values([raw_file], progress=False)
    both = count_values([packed, raw_file], progress=False)
    assert both.rows == 2 * plain.rows
    assert both.counters == [c + c for c in plain.counters]
    truncated = tmp_path / "cut.gz"
    truncated.write_bytes(packed.read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"cut.gz: not a valid gzip file"):
        count_values([truncated], progress=False)
