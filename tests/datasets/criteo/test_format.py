"""The raw Criteo format: validation and the dense transform."""

import numpy as np
import pytest
import tensorflow as tf
from keras_mixed_dim.datasets.criteo.pipeline import criteo_dataset
from keras_mixed_dim.datasets.criteo.format import transform_dense
from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary
from keras_mixed_dim.datasets.criteo.vocabulary import count_values


def row(label, dense, cats):
    return "\t".join([str(label), *map(str, dense), *cats])


def test_dense_transform_zeroes_missing_and_negatives():
    np.testing.assert_allclose(
        transform_dense([np.nan, -3, 0, 1, 9]), np.log1p([0, 0, 0, 1, 9]), rtol=1e-6
    )


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("1\t2\t3", "expected 40 TAB-separated fields, got 3"),
        (row(2, [0] * 13, ["68fd1e64"] * 26), "label must be 0 or 1"),
        (row(0, ["x"] + [0] * 12, ["68fd1e64"] * 26), "I1 must be an integer"),
        (row(0, [0] * 13, ["68FD1E64"] + ["68fd1e64"] * 25), "C1 must be 8 lowercase"),
    ],
)
def test_malformed_lines_name_file_line_and_reason(tmp_path, bad, reason, criteo_rows):
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(criteo_rows[:2] + [bad] + criteo_rows[2:]) + "\n")
    with pytest.raises(ValueError, match=f"bad.txt:3: {reason}"):
        count_values([path], progress=False)
    result = count_values([path], skip_malformed=True, progress=False)
    assert result.rows == 4 and result.skipped == 1
    # the tf.data pass fails on it too, unless told to skip it
    vocabulary = CriteoVocabulary.from_counts(result.counters)
    with pytest.raises(tf.errors.InvalidArgumentError, match="malformed Criteo line"):
        list(criteo_dataset([path], vocabulary, 8))
    rows = sum(len(y) for _, y in criteo_dataset([path], vocabulary, 8,
                                                 skip_malformed=True))
    assert rows == 4


def test_open_text_reads_plain_and_gzip_files_by_their_bytes(tmp_path):
    import gzip

    from keras_mixed_dim.datasets.criteo.format import is_gzip
    from keras_mixed_dim.datasets.criteo.format import open_text

    text = "1\tä\n2\tb\n"
    plain, packed = tmp_path / "a.gz", tmp_path / "b.txt"  # names that mislead
    plain.write_text(text, encoding="utf-8")
    packed.write_bytes(gzip.compress(text.encode()))
    assert not is_gzip(plain) and is_gzip(packed)
    for path in (plain, packed):
        with open_text(path) as file:
            assert file.read() == text
