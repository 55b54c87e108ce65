"""The counting pass and the ranked, bounded vocabularies."""

import numpy as np
import pytest
from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary
from keras_mixed_dim.datasets.criteo.vocabulary import build_or_load_vocabulary
from keras_mixed_dim.datasets.criteo.vocabulary import count_values


def row(label, dense, cats):
    return "\t".join([str(label), *map(str, dense), *cats])


def make_rows():
    a, b, c = "68fd1e64", "80e26c9b", "fb936136"
    cats_1 = [a] * 26
    cats_2 = [b] * 25 + [""]
    cats_3 = [a] * 24 + [c, c]
    return [
        row(1, [1, "", -3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], cats_1),
        row(0, [0] * 13, cats_2),
        row(0, [""] * 13, cats_3),
        row(1, [2] * 13, cats_1),
    ]


@pytest.fixture
def raw_file(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(make_rows()) + "\n")
    return path


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
