"""export/compress_model.py end to end: a trained MF model and MovieLens-format
ratings -> compressed, fine-tuned, int8 model -> SavedModel -> C API."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_mixed_dim.compress import QuantizedMixedDimEmbedding
from keras_mixed_dim.datasets import Vocabulary
from keras_mixed_dim.datasets.movielens.vocabulary import load_vocabularies
from keras_mixed_dim.datasets.movielens.vocabulary import save_vocabularies
from keras_mixed_dim.io_utils import file_sha256
from keras_mixed_dim.models.recommenders import matrix_factorization
from keras_mixed_dim.testing.savedmodel import check_serving_graph

# One worker runs this file (.ci/run: --dist loadgroup): its module fixture
# is expensive and would be built again on every worker that ran a test.
pytestmark = pytest.mark.xdist_group("compress_command")

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(args, check=True):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True,
                            text=True, timeout=600, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compress")
    rng = np.random.default_rng(0)
    users = rng.zipf(1.3, 8000) % 1500 + 1
    items = rng.zipf(1.2, 8000) % 2000 + 1
    ratings = rng.integers(1, 6, 8000)
    data = tmp / "u.data"
    data.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for t, (u, i, r)
                            in enumerate(zip(users, items, ratings))))
    user_vocab, item_vocab = Vocabulary.from_values(users), Vocabulary.from_values(items)
    keras.utils.set_random_seed(0)
    model = matrix_factorization(
        user_vocab.size, item_vocab.size,
        keras.layers.Embedding(user_vocab.size, 16, name="user_embedding"),
        keras.layers.Embedding(item_vocab.size, 16, name="item_embedding"),
        global_mean=3.0)
    model.compile(optimizer="adam", loss="mse")
    features = {"user": user_vocab.lookup(users), "item": item_vocab.lookup(items)}
    model.fit(features, ratings.astype("float32"), epochs=1, batch_size=512, verbose=0)
    model.save(tmp / "mf.keras")
    # as examples/movielens.py --save writes them: bound to the model file
    save_vocabularies(tmp / "mf.vocab", user_vocab, item_vocab,
                      meta={"model_sha256": file_sha256(tmp / "mf.keras")})
    return tmp


def test_command_compresses_fine_tunes_quantizes_and_exports(trained, tmp_path,
                                                             run_python):
    out = trained / "small.keras"
    result = run([ROOT / "export" / "compress_model.py", "--model", trained / "mf.keras",
                  "--data", trained / "u.data", "--budget-fraction", "0.25",
                  "--min-rows", "100",
                  "--fine-tune-epochs", "1", "--quantize", "int8", "--out", out])
    assert "converting" in result.stderr  # the progress bar
    report = json.loads((trained / "small.compress.json").read_text())
    assert {"mse_original", "mse_converted", "mse_fine_tuned", "mse_quantized"} <= set(
        report)
    for layer in report["layers"]:
        assert layer["bytes_after"] <= 0.25 * layer["bytes_before"]
    users_before, items_before, _ = load_vocabularies(trained / "mf.vocab")
    users_after, items_after, manifest = load_vocabularies(trained / "small.vocab")
    np.testing.assert_array_equal(users_after.tokens, users_before.tokens)
    np.testing.assert_array_equal(items_after.tokens, items_before.tokens)
    assert manifest["meta"]["model_sha256"] == file_sha256(out)
    model = keras.saving.load_model(out)
    assert isinstance(model.get_layer("item_embedding"), QuantizedMixedDimEmbedding)
    run([ROOT / "export" / "export_model.py", "--model", out, "--name", "small",
         "--base", trained / "serving", "--no-warmup"])
    vocab = {"user": users_after.tokens.tolist(), "item": items_after.tokens.tolist()}
    users = np.array(vocab["user"][:30] + [10**9], np.int64)
    items = np.array(vocab["item"][-30:] + [vocab["item"][0]], np.int64)
    inputs_path, outputs_path = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs_path, user_id=users, item_id=items)
    stdout = run_python.program("capi_run.py", trained / "serving" / "small" / "1",
                                inputs_path, outputs_path)
    info = json.loads(stdout.strip().splitlines()[-1])
    outputs = dict(np.load(outputs_path))
    assert info["tensorflow_imported"] is False
    index = {u: i for i, u in enumerate(vocab["user"])}
    item_index = {u: i for i, u in enumerate(vocab["item"])}
    features = {
        "user": np.array([index.get(u, len(index)) for u in users], np.int32),
        "item": np.array([item_index[i] for i in items], np.int32),
    }
    expected = model.predict(features, verbose=0).reshape(-1)
    np.testing.assert_allclose(outputs["rating"], expected, atol=1e-5)
    check_serving_graph(trained / "serving" / "small" / "1")


def compress_command():
    """export/compress_model.py as a module: its errors are checked in this
    process (a SystemExit carries the message Python prints), which spares
    a TensorFlow start per case; the end-to-end test above runs it as a
    program."""
    spec = importlib.util.spec_from_file_location(
        "compress_model_command", ROOT / "export" / "compress_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_command_errors_are_clear(trained, tmp_path):
    command = compress_command()
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    dense.save(tmp_path / "dense.keras")
    np.savez(tmp_path / "counts.npz", x=np.ones(3))
    with pytest.raises(SystemExit, match="has no keras.layers.Embedding layer"):
        command.main(["--model", str(tmp_path / "dense.keras"), "--counts",
                      str(tmp_path / "counts.npz"), "--out", str(tmp_path / "o.keras")])
    with pytest.raises(SystemExit, match="No counts for layer"):
        command.main(["--model", str(trained / "mf.keras"), "--counts",
                      str(tmp_path / "counts.npz"), "--min-rows", "100",
                      "--out", str(tmp_path / "o.keras")])
    assert not (tmp_path / "o.keras").exists()


def stacked_dlrm(path, cards=(1200, 30)):
    """A stacked DLRM (the default layout) saved at `path`, with counts for
    its features (named `embedding_f`) beside it."""
    from keras_mixed_dim.models.dlrm import dlrm

    keras.utils.set_random_seed(0)
    model = dlrm([keras.layers.Embedding(c, 8, name=f"embedding_{f}")
                  for f, c in enumerate(cards)], 8, bottom=(8,), top=(8,), num_dense=4)
    model.save(path)
    counts = {f"embedding_{f}": np.random.default_rng(f).permutation(
        1.0 / np.arange(1, c + 1)) for f, c in enumerate(cards)}
    np.savez(path.with_suffix(".npz"), **counts)
    rng = np.random.default_rng(1)
    x = {"dense": rng.random((16, 4)).astype("float32"),
         "categorical": rng.integers(0, cards, size=(16, len(cards))).astype("int32")}
    return model, counts, x


def test_command_converts_a_stacked_dlrm(tmp_path):
    from keras_mixed_dim.compress import compress_model

    model, counts, x = stacked_dlrm(tmp_path / "dlrm.keras")
    out = tmp_path / "small.keras"
    results = compress_command().main([
        "--model", str(tmp_path / "dlrm.keras"), "--counts",
        str(tmp_path / "dlrm.npz"), "--budget-fraction", "0.5", "--out", str(out)])
    # --min-rows 1000 (the default) picks the big feature only
    assert [layer["name"] for layer in results["layers"]] == ["embedding_0"]
    expected, _ = compress_model(model, counts, budget_fraction=0.5)
    got = keras.saving.load_model(out)
    assert got.get_layer("embeddings").plans == expected.get_layer("embeddings").plans
    assert got.get_layer("embeddings").plans[0].num_blocks > 1
    np.testing.assert_allclose(got.predict(x, verbose=0),
                               expected.predict(x, verbose=0), atol=1e-6)
    # the documented compress-then-int8 path, for the default layout
    results = compress_command().main([
        "--model", str(tmp_path / "dlrm.keras"), "--counts",
        str(tmp_path / "dlrm.npz"), "--budget-fraction", "0.5", "--quantize", "int8",
        "--out", str(out)])
    quantized = keras.saving.load_model(out).get_layer("embeddings")
    assert type(quantized).__name__ == "QuantizedStackedEmbedding"
    assert results["bytes_quantized"] == quantized.bytes


def test_command_counts_file_errors_are_one_line(trained, tmp_path):
    command = compress_command()
    (tmp_path / "text.npz").write_text("not numpy")
    np.save(tmp_path / "one.npy", np.ones(3))
    base = ["--model", str(trained / "mf.keras"), "--out", str(tmp_path / "o.keras")]
    for counts, message in ((tmp_path / "missing.npz", "error: no counts file at "
                             + str(tmp_path / "missing.npz")),
                            (tmp_path / "text.npz", "is not a valid .npz counts file"),
                            (tmp_path / "one.npy", "holds one array")):
        with pytest.raises(SystemExit) as raised:
            command.main(base + ["--counts", str(counts)])
        assert isinstance(raised.value.code, str) and message in raised.value.code
        assert raised.value.code.startswith("error: ")
    assert not (tmp_path / "o.keras").exists()
