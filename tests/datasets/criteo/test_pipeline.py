"""The tf.data pipeline over raw Criteo files (TensorFlow only)."""

import numpy as np
from keras_mixed_dim.datasets.criteo.pipeline import criteo_dataset
from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary
from keras_mixed_dim.datasets.criteo.vocabulary import count_values


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


def test_gzip_files_give_the_plain_files_batches(raw_file, tmp_path):
    import gzip

    packed = tmp_path / "train.txt.gz"
    packed.write_bytes(gzip.compress(raw_file.read_bytes()))
    vocab = CriteoVocabulary.from_counts(count_values([raw_file], progress=False).counters)

    def batches(paths):
        return [(x["dense"].numpy(), x["categorical"].numpy(), y.numpy())
                for x, y in criteo_dataset(paths, vocab, 3)]

    expected = batches([raw_file, raw_file])
    for got, want in zip(batches([raw_file, packed]), expected, strict=True):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
