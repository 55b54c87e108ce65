"""Criteo preprocessing: the tf.data pipeline and the serving signature run
the same function, and both match an independent numpy / Python reference."""

import numpy as np
import tensorflow as tf

from keras_mixed_dim.datasets.criteo.format import transform_dense as numpy_dense
from keras_mixed_dim.datasets.criteo.pipeline import criteo_dataset
from keras_mixed_dim.datasets.criteo.preprocessing import CriteoPreprocessing
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo
from keras_mixed_dim.datasets.criteo.vocabulary import build_or_load_vocabulary
from tests.helpers import criteo_reference_ids


OOV_BUCKETS = 3


def test_pipeline_and_serving_preprocessing_match_a_reference(tmp_path):
    data = tmp_path / "train.txt"
    SyntheticCriteo(600, [30, 200, 7] + [12] * 23, seed=3).write_raw(data)
    vocabulary, _ = build_or_load_vocabulary([data], folder=tmp_path / "v", min_count=2,
                                             num_oov_buckets=OOV_BUCKETS, progress=False)
    fields = [line.split("\t") for line in data.read_text().splitlines()]
    fields[0][1:4] = ["-5", "", "0"]  # negative, missing, zero
    dense_raw = np.array([[float(v) if v else np.nan for v in f[1:14]] for f in fields],
                         np.float32)
    categorical = np.array([f[14:] for f in fields], dtype=object)
    categorical[0, :] = "ffffffff"  # never seen
    categorical[1, :] = ""
    expected_ids = criteo_reference_ids(tmp_path / "v", categorical, OOV_BUCKETS)
    assert (expected_ids[0] >= np.array(vocabulary.sizes) - OOV_BUCKETS).all()

    # training: the tf.data pipeline over the raw lines
    lines = ["\t".join([f[0], *f[1:14], *c]) for f, c in zip(fields, categorical)]
    (tmp_path / "edited.txt").write_text("\n".join(lines) + "\n")
    batches = list(criteo_dataset([tmp_path / "edited.txt"], vocabulary, 1000))
    (features, labels), = batches
    np.testing.assert_array_equal(features["categorical"].numpy(), expected_ids)
    np.testing.assert_allclose(features["dense"].numpy(), numpy_dense(dense_raw), rtol=1e-6)

    # serving: the same preprocessing on what a client sends
    served = CriteoPreprocessing(vocabulary)(
        {"dense": tf.constant(dense_raw), "categorical": tf.constant(categorical.astype(str))})
    np.testing.assert_array_equal(served["categorical"].numpy(), expected_ids)
    np.testing.assert_allclose(served["dense"].numpy(), numpy_dense(dense_raw), rtol=1e-6)


def test_tables_read_the_saved_files_not_copies(tmp_path):
    data = tmp_path / "train.txt"
    SyntheticCriteo(50, [5] * 26, seed=0).write_raw(data)
    vocabulary, _ = build_or_load_vocabulary([data], folder=tmp_path / "v", progress=False)
    preprocessing = CriteoPreprocessing(vocabulary)
    paths = [table.path for table in preprocessing.lookup.tables]
    assert paths == [tmp_path / "v" / f"C{j}.tsv" for j in range(1, 27)]
    assert preprocessing.lookup.sizes == vocabulary.sizes
