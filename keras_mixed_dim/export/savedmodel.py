"""SavedModels for TensorFlow Serving, with the vocabulary lookups in-graph.

TensorFlow-only module. A model trained on any backend is reloaded under
the TensorFlow backend; its `serving_default` signature takes the raw
features a client has and returns named outputs. Nothing training-only is
traced (layers are called with `training=False`, so no frequency counting),
and every op is a stock TensorFlow op (hash tables, string hashing, math).
"""

import dataclasses
import os
import pathlib
import shutil
import uuid

import keras
import numpy as np
import tensorflow as tf

from keras_mixed_dim.datasets.criteo.pipeline import CriteoLookup
from keras_mixed_dim.datasets.criteo.format import NUM_CATEGORICAL
from keras_mixed_dim.datasets.criteo.format import NUM_DENSE
from keras_mixed_dim.datasets.lookup_table import VocabularyTable
from keras_mixed_dim.layers import MixedDimEmbedding

@dataclasses.dataclass
class ExportReport:
    """Where an export went and what it weighs.

    Attributes:
        path: The version folder `BASE/NAME/VERSION`.
        version: The integer version.
        embedding_bytes: Embedding tables, projections and remap tables.
        other_variable_bytes: Every other variable (MLPs, biases).
        vocabulary_bytes: Lookup-table payload (keys plus int64 values).
        variables_dir_bytes: Measured size of `variables/` on disk.
    """

    path: pathlib.Path
    version: int
    embedding_bytes: int
    other_variable_bytes: int
    vocabulary_bytes: int
    variables_dir_bytes: int


def _check_shapes(first, first_tail, first_name, second, second_tail, second_name):
    """In-graph asserts that name the input, since a C API or TF Serving
    client can feed shapes the signature does not allow.

    The element count is compared with `batch x prod(tail)`: unlike the
    rank, which the signature makes static (and the assert a no-op at trace
    time), both sides stay dynamic.
    """
    checks = []
    for tensor, tail, name in ((first, first_tail, first_name),
                               (second, second_tail, second_name)):
        expected = f"(batch, {', '.join(map(str, tail))})" if tail else "(batch,)"
        checks.append(tf.debugging.assert_equal(
            tf.size(tensor, out_type=tf.int64),
            tf.cast(tf.shape(tensor)[0], tf.int64) * int(np.prod(tail, dtype=np.int64)),
            message=f"`{name}` must have shape {expected}"))
    with tf.control_dependencies(checks):
        checks.append(tf.debugging.assert_equal(
            tf.shape(first)[0], tf.shape(second)[0],
            message=f"`{first_name}` and `{second_name}` must have the same batch size"))
    return checks


def _weight_bytes(model):
    embedding = other = 0
    for layer in model.layers:
        size = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
                   for w in layer.weights)
        if isinstance(layer, (MixedDimEmbedding, keras.layers.Embedding)):
            embedding += size
        else:
            other += size
    return embedding, other


def _next_version(model_dir, version):
    existing = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
    if version is None:
        return max(existing, default=0) + 1
    if isinstance(version, bool) or int(version) != version or version < 1:
        raise ValueError(f"`version` must be an integer >= 1. Received: {version!r}")
    if (model_dir / str(version)).exists():
        raise FileExistsError(
            f"{model_dir / str(version)} exists; versions are never overwritten.")
    return int(version)


def write_version(base, name, write_fn, version=None):
    """Writes `BASE/NAME/VERSION` via a hidden temporary folder and a rename.

    TF Serving only watches integer folder names, so it never sees a partial
    export; a crash leaves at most a `.partial-*` folder behind.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"`name` must be a plain folder name. Received: {name!r}")
    model_dir = pathlib.Path(base) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = _next_version(model_dir, version)
    temporary = model_dir / f".partial-{version}-{uuid.uuid4().hex[:8]}"
    try:
        write_fn(temporary)
        os.rename(temporary, model_dir / str(version))
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return model_dir / str(version), version


def _directory_bytes(path):
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


def _save(model, endpoint, signature, tracked, path, warmup):
    archive = keras.export.ExportArchive()
    # Not `archive.track(model)`: the endpoint already captures the model's
    # variables, and tracking the model too writes every variable twice.
    for resource in tracked:
        archive.track(resource)
    archive.add_endpoint("serving_default", endpoint, input_signature=signature)
    archive.write_out(str(path), verbose=False)
    if warmup is not None:
        from keras_mixed_dim.export.warmup import write_warmup_requests

        write_warmup_requests(path, warmup)


def export_criteo(model, base, name, vocabulary=None, version=None, warmup=None):
    """Exports a DLRM for serving on raw Criteo features.

    Signature inputs: `dense` float32 `(batch, 13)`, the raw integer features
    with NaN for missing; `categorical` string `(batch, 26)`, the raw hex
    values ("" for missing). With `vocabulary=None` (models trained on
    synthetic ids) `categorical` is int32 ids instead. Output: `probability`
    float32 `(batch,)`.

    Args:
        model: The trained DLRM (inputs `dense`, `categorical`).
        base: The model base folder (TF Serving's `--model_base_path` parent).
        name: Model name (folder under `base`).
        vocabulary: The `CriteoVocabulary` the model was trained with.
        version: Integer version; default one more than the newest.
        warmup: Optional dict of example inputs for the warm-up requests.

    Returns:
        An `ExportReport`.
    """
    lookup = None
    if vocabulary is not None:
        lookup = CriteoLookup(vocabulary)
        categorical_spec = tf.TensorSpec((None, NUM_CATEGORICAL), tf.string,
                                         name="categorical")
    else:
        categorical_spec = tf.TensorSpec((None, NUM_CATEGORICAL), tf.int32,
                                         name="categorical")
    signature = [tf.TensorSpec((None, NUM_DENSE), tf.float32, name="dense"),
                 categorical_spec]

    def serve(dense, categorical):
        checks = _check_shapes(dense, [NUM_DENSE], "dense", categorical,
                               [NUM_CATEGORICAL], "categorical")
        with tf.control_dependencies(checks):
            dense, categorical = tf.identity(dense), tf.identity(categorical)
        dense = tf.where(tf.math.is_nan(dense), tf.zeros_like(dense), dense)
        dense = tf.math.log1p(tf.maximum(dense, 0.0))
        ids = categorical if lookup is None else lookup(categorical)
        probability = model({"dense": dense, "categorical": ids}, training=False)
        return {"probability": tf.reshape(tf.cast(probability, tf.float32), [-1])}

    path, version = write_version(
        base, name,
        lambda p: _save(model, serve, signature, [lookup] if lookup else [], p, warmup),
        version)
    embedding, other = _weight_bytes(model)
    return ExportReport(path, version, embedding, other,
                        lookup.payload_bytes if lookup else 0,
                        _directory_bytes(path / "variables"))


def export_movielens(model, base, name, users, items, version=None, warmup=None):
    """Exports an MF / NCF model for serving on raw MovieLens ids.

    Signature inputs: `user_id` and `item_id`, `(batch,)` int64 raw ids (or
    strings when the vocabularies hold strings). Unknown ids map to the
    out-of-vocabulary index, as in training. Output: `rating` `(batch,)`.

    Args:
        model: The trained model (inputs `user`, `item`).
        base, name, version, warmup: As in `export_criteo`.
        users: User raw ids in index order (the training vocabulary).
        items: Item raw ids in index order.
    """
    user_lookup = VocabularyTable(users)
    item_lookup = VocabularyTable(items)
    if user_lookup.string_keys != item_lookup.string_keys:
        raise ValueError("User and item ids must both be strings or both integers.")
    dtype = tf.string if user_lookup.string_keys else tf.int64
    signature = [tf.TensorSpec((None,), dtype, name="user_id"),
                 tf.TensorSpec((None,), dtype, name="item_id")]

    def serve(user_id, item_id):
        checks = _check_shapes(user_id, [], "user_id", item_id, [], "item_id")
        with tf.control_dependencies(checks):
            user_id, item_id = tf.identity(user_id), tf.identity(item_id)
        features = {"user": tf.cast(user_lookup(user_id), tf.int32),
                    "item": tf.cast(item_lookup(item_id), tf.int32)}
        rating = model(features, training=False)
        return {"rating": tf.reshape(tf.cast(rating, tf.float32), [-1])}

    tracked = [user_lookup, item_lookup]
    path, version = write_version(
        base, name, lambda p: _save(model, serve, signature, tracked, p, warmup), version)
    embedding, other = _weight_bytes(model)
    return ExportReport(path, version, embedding, other,
                        user_lookup.payload_bytes + item_lookup.payload_bytes,
                        _directory_bytes(path / "variables"))


def write_models_config(base, serving_base="/models"):
    """Writes `BASE/models.config` listing every model folder under `base`,
    with base paths as TF Serving's container sees them (`/models/NAME`)."""
    from keras_mixed_dim.io_utils import atomic_write_text

    base = pathlib.Path(base)
    names = sorted(p.name for p in base.iterdir()
                   if p.is_dir() and not p.name.startswith("."))
    entries = "".join(
        f"  config {{\n    name: \"{n}\"\n    base_path: \"{serving_base}/{n}\"\n"
        f"    model_platform: \"tensorflow\"\n  }}\n"
        for n in names
    )
    atomic_write_text(base / "models.config", f"model_config_list {{\n{entries}}}\n")
    return base / "models.config"
