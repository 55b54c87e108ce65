"""Criteo: raw format, counting pass, vocabularies, tf.data, DLRM, example."""

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.datasets.criteo import criteo_dataset
from keras_mixed_dim.datasets.criteo_format import KAGGLE_CARDINALITIES
from keras_mixed_dim.datasets.criteo_format import transform_dense
from keras_mixed_dim.datasets.criteo_vocab import CriteoVocabulary
from keras_mixed_dim.datasets.criteo_vocab import build_or_load_vocabulary
from keras_mixed_dim.datasets.criteo_vocab import count_values
from keras_mixed_dim.datasets.synthetic_criteo import SyntheticCriteo
from keras_mixed_dim.models.dlrm import dlrm
from keras_mixed_dim.models.dlrm import embedding_layers
from keras_mixed_dim.models.dlrm import table_dims
from keras_mixed_dim.planning import md_solver

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


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


def test_dense_transform_zeroes_missing_and_negatives():
    np.testing.assert_allclose(
        transform_dense([np.nan, -3, 0, 1, 9]), np.log1p([0, 0, 0, 1, 9]), rtol=1e-6
    )


def test_counting_pass(raw_file):
    result = count_values([raw_file], progress=False)
    assert result.rows == 4 and result.skipped == 0
    assert result.counters[0] == {"68fd1e64": 3, "80e26c9b": 1}
    assert result.counters[25] == {"68fd1e64": 2, "": 1, "fb936136": 1}


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("1\t2\t3", "expected 40 TAB-separated fields, got 3"),
        (row(2, [0] * 13, ["68fd1e64"] * 26), "label must be 0 or 1"),
        (row(0, ["x"] + [0] * 12, ["68fd1e64"] * 26), "I1 must be an integer"),
        (row(0, [0] * 13, ["68FD1E64"] + ["68fd1e64"] * 25), "C1 must be 8 lowercase"),
    ],
)
def test_malformed_lines_name_file_line_and_reason(tmp_path, bad, reason):
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(make_rows()[:2] + [bad] + make_rows()[2:]) + "\n")
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


def test_synthetic_rows_are_ranked_zipf_and_deterministic():
    generator = SyntheticCriteo(20_000, [1000, 50, 3], seed=1)
    dense, categorical, labels = generator.arrays()
    assert dense.shape == (20_000, 13) and categorical.shape == (20_000, 3)
    counts = np.bincount(categorical[:, 0], minlength=1000)
    assert counts[0] > counts[10] > counts[500]
    assert categorical.max(axis=0).tolist() <= [999, 49, 2]
    assert 0.1 < labels.mean() < 0.6
    again = SyntheticCriteo(20_000, [1000, 50, 3], seed=1).arrays()
    np.testing.assert_array_equal(again[1], categorical)


def test_table_dims_follow_md_solver():
    dims = table_dims(KAGGLE_CARDINALITIES, 16, "table", alpha=0.3)
    np.testing.assert_array_equal(dims, md_solver(KAGGLE_CARDINALITIES, 0.3, base_dim=16))
    assert table_dims([10, 20], 8, "uniform") == [8, 8]


@pytest.mark.parametrize("mode", ["uniform", "table", "block"])
def test_dlrm_trains_in_each_embedding_mode(mode):
    cardinalities = [20_000, 500, 30, 3]
    generator = SyntheticCriteo(8192, cardinalities, seed=0)
    dense, categorical, labels = generator.arrays()
    embeddings = embedding_layers(cardinalities, 8, mode, alpha=0.3, block_min_rows=1000)
    if mode == "block":
        assert embeddings[0].plan.num_blocks == 4 and embeddings[1].plan.num_blocks == 1
    if mode != "uniform":
        assert all(isinstance(e, MixedDimEmbedding) for e in embeddings)
    model = dlrm(embeddings, 8, bottom=(32,), top=(32,))
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    history = model.fit({"dense": dense, "categorical": categorical}, labels,
                        epochs=3, batch_size=256, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    probabilities = model.predict({"dense": dense[:16], "categorical": categorical[:16]},
                                  verbose=0)
    assert probabilities.shape == (16, 1)
    assert np.all((probabilities > 0) & (probabilities < 1))


def test_example_end_to_end_on_real_rows(shared_data, tmp_path):
    data = shared_data / "criteo" / "derived" / "train.tiny.txt"
    if not data.exists():
        pytest.skip(f"Criteo sample not found at {data}")
    results_path, model_path = tmp_path / "r.json", tmp_path / "m.keras"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "criteo.py"), "--data", str(data),
         "--vocab-dir", str(tmp_path / "vocab"), "--embedding", "block",
         "--epochs", "3", "--batch-size", "256", "--bottom", "64", "--top", "64",
         "--verbose", "0", "--results-json", str(results_path),
         "--save", str(model_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(results_path.read_text())
    assert results["source"]["rows"] == 1999
    losses = results["loss_history"]
    assert losses[-1] < losses[0]
    assert results["vocabulary_bytes"] > 0 and results["embedding_bytes"] > 0
    assert "val AUC" in result.stdout
    loaded = keras.models.load_model(model_path)
    assert isinstance(loaded.get_layer("embedding_2"), MixedDimEmbedding)


def test_dot_interaction_gives_upper_triangle_dot_products():
    from keras_mixed_dim.layers.dot_interaction import DotInteraction

    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=(5, 4)).astype("float32") for _ in range(4)]
    out = keras.ops.convert_to_numpy(DotInteraction()(vectors))
    expected = np.stack(
        [np.sum(vectors[i] * vectors[j], axis=1) for i in range(4) for j in range(i + 1, 4)],
        axis=1,
    )
    assert out.shape == (5, 6)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_tfds_builder_makes_dlrm_day_splits(tmp_path):
    tfds = pytest.importorskip(
        "tensorflow_datasets", reason="the tfds builder needs the [datasets] extra"
    )
    from keras_mixed_dim.datasets.criteo_tfds import CriteoKaggle
    from keras_mixed_dim.datasets.criteo_tfds import day_boundaries

    assert day_boundaries(70) == (60, 65)
    manual = tmp_path / "manual"
    manual.mkdir()
    rows = [make_rows()[i % 4] for i in range(70)]
    (manual / "train.txt").write_text("\n".join(rows) + "\n")
    builder = CriteoKaggle(data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert sizes == {"train": 60, "validation": 5, "test": 5}
    first = next(iter(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False))))
    assert first["C1"] in (b"68fd1e64", b"80e26c9b")
    assert first["label"] in (0, 1)
