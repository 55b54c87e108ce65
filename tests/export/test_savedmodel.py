"""`export_for_serving` on a user's own model, checked through TensorFlow's
C API (the way TF Serving loads it) against `model.predict` and numpy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixed_dim.datasets.lookup_table import VocabularyTable
from keras_mixed_dim.export import export_for_serving
from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.testing.savedmodel import check_serving_graph
from keras_mixed_dim.testing.savedmodel import serving_ops

ROWS = 40


def counting_model():
    """A user's model: a counting mixed-dim table over int ids, a dense input."""
    ids = keras.Input(shape=(), dtype="int32", name="ids")
    extra = keras.Input(shape=(3,), dtype="float32", name="extra")
    embedding = MixedDimEmbedding(ROWS, 8, num_blocks=2, count_frequencies=True,
                                  name="table")
    x = keras.layers.Concatenate()([embedding(ids), extra])
    score = keras.layers.Dense(1, name="score")(x)
    model = keras.Model({"ids": ids, "extra": extra}, score)
    model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    features = {"ids": rng.integers(0, ROWS, 256).astype("int32"),
                "extra": rng.normal(size=(256, 3)).astype("float32")}
    model.fit(features, rng.normal(size=(256, 1)), epochs=1, batch_size=64, verbose=0)
    return model, embedding


@pytest.fixture(scope="module")
def trained():
    return counting_model()


def test_user_model_exports_and_serves_like_predict(trained, tmp_path, run_c_api):
    model, embedding = trained
    assert int(keras.ops.sum(embedding.frequency_counts)) == 256  # it does count
    report = export_for_serving(model, tmp_path, "user", output_names="score")
    assert report.version == 1 and report.path == tmp_path / "user" / "1"
    ids = np.array([0, 5, 39, 7, 7], np.int32)
    extra = np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3)
    outputs, info = run_c_api(report.path, {"ids": ids, "extra": extra})
    expected = model.predict({"ids": ids, "extra": extra}, verbose=0).reshape(-1)
    np.testing.assert_allclose(outputs["score"], expected, rtol=1e-5, atol=1e-6)
    assert outputs["score"].shape == (5,)
    assert info["tensorflow_imported"] is False
    assert info["empty_shapes"] == {"score": [0]}
    for key in ("ids", "extra"):
        for case in ("extra_axis", "fewer_axes", "wrong_dtype"):
            error = info["errors"][key][case]
            assert error is not None and f"`{key}`" in error, (key, case, error)
    # serving never counts: the counts variable is never written
    check_serving_graph(report.path)
    before = keras.ops.convert_to_numpy(embedding.frequency_counts).copy()
    model.predict({"ids": ids, "extra": extra}, verbose=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(embedding.frequency_counts),
                                  before)


def test_write_op_check_catches_a_counting_graph(tmp_path):
    """The no-write check is real: a signature that calls the layer in
    training mode (so it counts) is caught."""
    embedding = MixedDimEmbedding(ROWS, 4, num_blocks=2, count_frequencies=True)
    embedding.build((None,))
    archive = keras.export.ExportArchive()
    archive.track(embedding)
    archive.add_endpoint(
        "serving_default", lambda ids: {"v": embedding(ids, training=True)},
        input_signature=[tf.TensorSpec((None,), tf.int32, name="ids")])
    archive.write_out(str(tmp_path / "counting"), verbose=False)
    assert any(op.startswith("ResourceScatter") for op in serving_ops(tmp_path / "counting"))
    with pytest.raises(AssertionError, match="writes state"):
        check_serving_graph(tmp_path / "counting")


def test_preprocessing_with_vocabulary_assets(trained, tmp_path, run_c_api):
    """Raw string ids through a file-backed vocabulary shipped as an asset."""
    model, _ = trained
    tokens = [f"item-{i:03d}" for i in range(ROWS - 2)]  # 2 OOV buckets after them
    table = VocabularyTable(tokens, num_oov_buckets=2)

    class Preprocess(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = table

        def __call__(self, features):
            return {"ids": tf.cast(self.table(features["name"]), tf.int32),
                    "extra": features["extra"]}

    signature = {"name": tf.TensorSpec((None,), tf.string),
                 "extra": tf.TensorSpec((None, 3), tf.float32)}
    names = np.array([b"item-000", b"item-017", b"unknown", b"", b"item-037"])
    extra = np.ones((5, 3), np.float32)
    report = export_for_serving(model, tmp_path, "strings", preprocess=Preprocess(),
                                input_signature=signature, output_names="score",
                                warmup={"name": names, "extra": extra})
    assert sorted(p.name for p in (report.path / "assets").iterdir()) == ["vocabulary.tsv"]
    # the values live in the asset, not as constants in the graph
    assert b"item-017" not in (report.path / "saved_model.pb").read_bytes()
    outputs, _ = run_c_api(report.path, {"name": names, "extra": extra})
    # independent reference: position in the token list, else the
    # documented bucket Fingerprint64 mod 2 after the kept values
    position = {t.encode(): i for i, t in enumerate(tokens)}
    buckets = tf.strings.to_hash_bucket_fast(names, 2).numpy()
    ids = np.array([position.get(n, len(tokens) + b) for n, b in zip(names, buckets)],
                   np.int32)
    assert ids[2] >= len(tokens) and ids[3] >= len(tokens)
    expected = model.predict({"ids": ids, "extra": extra}, verbose=0).reshape(-1)
    np.testing.assert_allclose(outputs["score"], expected, rtol=1e-5, atol=1e-6)
    warmup = report.path / "assets.extra" / "tf_serving_warmup_requests"
    assert len(list(tf.data.TFRecordDataset(str(warmup)))) == 10


def test_plain_model_export_keeps_working(trained, tmp_path, run_c_api):
    model, _ = trained
    model.export(str(tmp_path / "plain"), verbose=False)
    ids = np.array([1, 2, 3], np.int32)
    extra = np.zeros((3, 3), np.float32)
    outputs, info = run_c_api(tmp_path / "plain", {"ids": ids, "extra": extra})
    expected = model.predict({"ids": ids, "extra": extra}, verbose=0)
    (value,) = outputs.values()
    np.testing.assert_allclose(value.reshape(-1), expected.reshape(-1), rtol=1e-5)
    # the C API check rejects a scalar feed for a (batch,) input
    assert "`ids`" in info["errors"]["ids"]["fewer_axes"]
    check_serving_graph(tmp_path / "plain")


def test_warmup_that_does_not_fit_fails_the_export(trained, tmp_path):
    model, _ = trained
    with pytest.raises(ValueError, match="exactly the inputs"):
        export_for_serving(model, tmp_path, "m", warmup={"ids": np.zeros(2, np.int32)})
    with pytest.raises(Exception, match="`extra`"):
        export_for_serving(model, tmp_path, "m", warmup={
            "ids": np.zeros(2, np.int32), "extra": np.zeros((2, 4), np.float32)})
    assert not any(p.name.isdigit() for p in (tmp_path / "m").iterdir())


def test_subclassed_model_needs_a_signature(tmp_path):
    class Scale(keras.Model):
        def call(self, x):
            return 2.0 * x

    model = Scale()
    with pytest.raises(ValueError, match="input_signature"):
        export_for_serving(model, tmp_path, "s")
    report = export_for_serving(
        model, tmp_path, "s", input_signature={"x": tf.TensorSpec((None, 2), tf.float32)},
        preprocess=lambda features: features["x"])
    loaded = tf.saved_model.load(str(report.path))
    out = loaded.signatures["serving_default"](x=tf.constant([[1.0, 2.0]]))
    np.testing.assert_allclose(out["output_0"].numpy(), [[2.0, 4.0]])


def test_movielens_preprocessing_maps_raw_ids_in_the_export(tmp_path):
    from keras_mixed_dim.datasets.movielens.preprocessing import MovieLensPreprocessing

    ids = keras.Input(shape=(), dtype="int32", name="user")
    items = keras.Input(shape=(), dtype="int32", name="item")
    table = keras.layers.Embedding(5, 2)
    mf = keras.Model({"user": ids, "item": items},
                     keras.layers.Dot(axes=-1)([table(ids), table(items)]))
    report = export_for_serving(
        mf, tmp_path, "mf", output_names="rating",
        preprocess=MovieLensPreprocessing([10, 20, 30, 40], [10, 20, 30, 40]))
    loaded = tf.saved_model.load(str(report.path))
    out = loaded.signatures["serving_default"](
        user_id=tf.constant([10, 99], tf.int64), item_id=tf.constant([20, 40], tf.int64))
    expected = mf.predict({"user": np.array([0, 4]), "item": np.array([1, 3])}, verbose=0)
    np.testing.assert_allclose(out["rating"].numpy(), expected.reshape(-1), rtol=1e-6)


@pytest.mark.parametrize("dtype, keys", [
    ("string", [b"a", b"", b"zz", b"17"]),
    ("int64", [5, -1, 2**40, 0]),
])
def test_vocabulary_table_matches_the_documented_mapping(dtype, keys, tmp_path):
    """Kept values -> their line; others -> size + Fingerprint64(text) mod
    buckets (integers hashed as decimal text); an empty vocabulary too."""
    kept = [b"a", b"17"] if dtype == "string" else [5, 0]
    values = tf.constant(keys, tf.string if dtype == "string" else tf.int64)
    text = values if dtype == "string" else tf.strings.as_string(values)
    buckets = tf.strings.to_hash_bucket_fast(text, 3).numpy()
    for tokens in (kept, []):
        table = VocabularyTable([t.decode() if isinstance(t, bytes) else t for t in tokens],
                                num_oov_buckets=3, key_dtype=dtype)
        expected = [tokens.index(k) if k in tokens else len(tokens) + b
                    for k, b in zip(keys, buckets)]
        np.testing.assert_array_equal(table(values).numpy(), expected)


@pytest.mark.parametrize("fuse", [1, 0, 1.0, "auto"])
def test_fuse_stacked_takes_only_its_documented_values(fuse, tmp_path):
    # 1 == True and 0 == False: a tuple membership test let them through
    # (1 then failed later, or not at all, as an unknown `projection`)
    inputs = keras.Input((2,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Embedding(10, 4)(inputs))
    with pytest.raises(ValueError, match=f"fuse_stacked.*Received: {fuse!r}"):
        export_for_serving(model, tmp_path, "m", fuse_stacked=fuse)
    assert not any(tmp_path.iterdir())
