"""`export/export_model.py` on the examples' saved models: the vocabularies
ship as assets, are bound to their model file, and are checked against the
model's tables; the served results match `model.predict` on ids computed
independently from the vocabulary files."""

import importlib.util

import keras
import numpy as np
import pytest

from keras_mixed_dim.datasets.criteo.pipeline import criteo_dataset
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo
from keras_mixed_dim.datasets.criteo.vocabulary import build_or_load_vocabulary
from keras_mixed_dim.io_utils import InvalidModelFileError
from keras_mixed_dim.io_utils import atomic_save_model
from keras_mixed_dim.io_utils import file_sha256
from keras_mixed_dim.io_utils import load_model_file
from keras_mixed_dim.models.dlrm import dlrm
from keras_mixed_dim.models.dlrm import embedding_layers
from keras_mixed_dim.testing.savedmodel import check_serving_graph
from tests.helpers import criteo_reference_ids

# One worker runs this file (.ci/run: --dist loadgroup): its module fixture
# is expensive and would be built again on every worker that ran a test.
pytestmark = pytest.mark.xdist_group("example_models")

OOV_BUCKETS = 2


@pytest.fixture(scope="module")
def export_model(repo_root):
    spec = importlib.util.spec_from_file_location(
        "export_model", repo_root / "export" / "export_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def criteo_model(tmp_path_factory):
    """A DLRM trained on raw lines and saved the way examples/criteo.py
    --save does: the model, then its vocabulary bound by the model's hash."""
    tmp = tmp_path_factory.mktemp("criteo")
    data = tmp / "train.txt"
    SyntheticCriteo(1500, [40, 300, 7] + [15] * 23, seed=1).write_raw(data)
    vocabulary, _ = build_or_load_vocabulary([data], folder=tmp / "cache", min_count=2,
                                             num_oov_buckets=OOV_BUCKETS, progress=False)
    embeddings = embedding_layers(list(vocabulary.sizes), 4, "table_blocks", num_blocks=2,
                                  block_min_rows=100)
    # the stacked layout (one StackedEmbedding; its features keep the names
    # embedding_<f> that the export's vocabulary check looks for)
    model = dlrm(embeddings, 4, bottom=[8], top=[8], stacked=True)
    assert model.get_layer("embeddings").feature_names[4] == "embedding_4"
    model.compile("adam", "binary_crossentropy", jit_compile=False)
    model.fit(criteo_dataset([data], vocabulary, 256), epochs=1, verbose=0)
    path = tmp / "dlrm.keras"
    atomic_save_model(model, path)
    vocabulary.save(tmp / "dlrm.vocab", meta={"model_sha256": file_sha256(path)})
    return tmp, path, data


def test_criteo_export_matches_predict_through_the_c_api(criteo_model, export_model,
                                                         run_c_api):
    tmp, path, data = criteo_model
    export_model.main(["--model", str(path), "--name", "criteo", "--base", str(tmp / "s")])
    version = tmp / "s" / "criteo" / "1"
    assets = sorted(p.name for p in (version / "assets").iterdir())
    assert assets == sorted(f"C{j}.tsv" for j in range(1, 27))
    fields = [line.split("\t") for line in data.read_text().splitlines()[:30]]
    dense = np.array([[float(v) if v else np.nan for v in f[1:14]] for f in fields],
                     np.float32)
    dense[0, :3] = [np.nan, -7, 0]
    categorical = np.array([f[14:] for f in fields], dtype=object)
    categorical[1, :] = "ffffffff"
    categorical[2, :] = ""
    outputs, info = run_c_api(version, {"dense": dense,
                                        "categorical": categorical.astype("S8")})
    assert info["tensorflow_imported"] is False
    for key in ("dense", "categorical"):
        for case, error in info["errors"][key].items():
            assert error is not None and f"`{key}`" in error, (key, case, error)
    features = {"dense": np.log1p(np.maximum(np.nan_to_num(dense), 0)),
                "categorical": criteo_reference_ids(
                    tmp / "dlrm.vocab", categorical, OOV_BUCKETS).astype(np.int32)}
    model = keras.models.load_model(path)
    expected = model.predict(features, verbose=0).reshape(-1)
    np.testing.assert_allclose(outputs["probability"], expected, rtol=1e-5, atol=1e-6)
    check_serving_graph(version)


def test_vocabulary_of_another_model_file_is_refused(criteo_model, export_model,
                                                     tmp_path):
    tmp, path, _ = criteo_model
    # a --save killed after the new model, before its vocabulary: the
    # folder beside it is the previous run's
    stale = tmp_path / "dlrm.keras"
    stale.write_bytes(path.read_bytes() + b"")
    model = keras.models.load_model(path)
    atomic_save_model(model, stale)
    import shutil

    shutil.copytree(tmp / "dlrm.vocab", tmp_path / "dlrm.vocab")
    assert file_sha256(stale) != file_sha256(path)
    with pytest.raises(SystemExit, match="written for another version"):
        export_model.main(["--model", str(stale), "--name", "c", "--base", str(tmp_path / "s")])
    assert not (tmp_path / "s" / "c").exists() or not any(
        p.name.isdigit() for p in (tmp_path / "s" / "c").iterdir())


def test_vocabulary_sizes_are_checked_against_the_tables(criteo_model, export_model,
                                                         tmp_path):
    tmp, path, data = criteo_model
    from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary

    vocabulary = CriteoVocabulary.load(tmp / "dlrm.vocab")
    shrunk = CriteoVocabulary(
        tuple(t[:-1] if j == 4 else t for j, t in enumerate(vocabulary.tokens)),
        tuple(c[:-1] if j == 4 else c for j, c in enumerate(vocabulary.counts)),
        vocabulary.dropped, vocabulary.num_oov_buckets)
    import shutil

    shutil.copy(path, tmp_path / "dlrm.keras")
    shrunk.save(tmp_path / "dlrm.vocab",
                meta={"model_sha256": file_sha256(tmp_path / "dlrm.keras")})
    with pytest.raises(SystemExit, match="vocabulary of C5 has .* model's table for it has"):
        export_model.main(["--model", str(tmp_path / "dlrm.keras"), "--name", "c",
                           "--base", str(tmp_path / "s")])


def test_a_damaged_model_file_is_named(criteo_model, export_model, tmp_path):
    _, path, _ = criteo_model
    cut = tmp_path / "cut.keras"
    cut.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(SystemExit, match="cut.keras is not a valid model file"):
        export_model.main(["--model", str(cut), "--name", "c", "--base", str(tmp_path)])
    with pytest.raises(InvalidModelFileError):
        export_model.export_keras_file(cut, tmp_path, "c")


@pytest.mark.slow
def test_movielens_example_save_and_export(run_python, tmp_path, export_model, run_c_api):
    model_path = tmp_path / "mf.keras"
    run_python("examples/movielens.py", "--synthetic-users", "200",
               "--synthetic-items", "300", "--synthetic-ratings", "6000", "--epochs", "1",
               "--embedding", "mixed", "--dim", "4", "--verbose", "0",
               "--save", model_path)
    export_model.main(["--model", str(model_path), "--name", "ml",
                       "--base", str(tmp_path / "s")])
    version = tmp_path / "s" / "ml" / "1"
    assert sorted(p.name for p in (version / "assets").iterdir()) == ["item.tsv", "user.tsv"]
    folder = tmp_path / "mf.vocab"
    users = [int(l.split("\t")[0]) for l in (folder / "user.tsv").read_text().splitlines()]
    items = [int(l.split("\t")[0]) for l in (folder / "item.tsv").read_text().splitlines()]
    user_ids = np.array(users[:15] + [10**12, -5], np.int64)
    item_ids = np.array(items[:15] + [items[0], 2**63 - 1], np.int64)
    outputs, info = run_c_api(version, {"user_id": user_ids, "item_id": item_ids})
    for key in ("user_id", "item_id"):
        for case, error in info["errors"][key].items():
            assert error is not None and f"`{key}`" in error, (key, case, error)
    user_index = {u: i for i, u in enumerate(users)}
    item_index = {u: i for i, u in enumerate(items)}
    features = {"user": np.array([user_index.get(u, len(users)) for u in user_ids], np.int32),
                "item": np.array([item_index.get(i, len(items)) for i in item_ids], np.int32)}
    expected = load_model_file(model_path).predict(features, verbose=0).reshape(-1)
    np.testing.assert_allclose(outputs["rating"], expected, rtol=1e-5, atol=1e-6)
    check_serving_graph(version)
