"""The tf.data pipeline over raw Criteo files (TensorFlow only)."""

import numpy as np
import pytest
from keras_mixed_dim.datasets.criteo.pipeline import criteo_dataset
from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary
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


def test_pipeline_parses_rows(raw_file):
    counters = count_values([raw_file], progress=False).counters
    vocab = CriteoVocabulary.from_counts(counters, min_count=2, num_oov_buckets=3)
    features, labels = next(iter(criteo_dataset([raw_file], vocab, 4)))
    np.testing.assert_array_equal(labels.numpy()[:, 0], [1, 0, 0, 1])
    expected = np.log1p(np.array([1, 0, 0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]))
    np.testing.assert_allclose(features["dense"].numpy()[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(features["dense"].numpy()[2], 0)
    categorical = features["categorical"].numpy()
    assert categorical[0, 25] == 0  # the kept value
    assert 1 <= categorical[1, 25] < 4 and 1 <= categorical[2, 25] < 4  # buckets
    assert categorical.dtype == np.int32


def test_holdout_parts_are_disjoint_and_complete(raw_file):
    vocab = CriteoVocabulary.from_counts(count_values([raw_file], progress=False).counters)

    def labels(part):
        data = criteo_dataset([raw_file], vocab, 8, part=part, val_every=2)
        return np.concatenate([y.numpy()[:, 0] for _, y in data])

    np.testing.assert_array_equal(labels("val"), [1, 0])  # lines 0 and 2
    np.testing.assert_array_equal(labels("train"), [0, 1])
