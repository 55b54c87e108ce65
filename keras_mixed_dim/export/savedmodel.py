"""SavedModels for TensorFlow Serving from any Keras model (TensorFlow-only).

`export_for_serving` writes a versioned, atomic `BASE/NAME/VERSION` folder
whose `serving_default` signature takes the features a client has, runs an
optional preprocessing function (raw features -> model inputs) and the model
(`training=False`: nothing training-only, such as frequency counting, is
traced), and returns named outputs. Preprocessing that is a `tf.Module`
(vocabulary tables) is saved with the model; file-backed tables ship their
vocabulary files as SavedModel assets.
"""

import contextlib
import dataclasses
import pathlib

import keras
import numpy as np
import tensorflow as tf

from keras_mixed_dim import backend
from keras_mixed_dim.export.versions import write_version


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
        saved_model_bytes: Size of `saved_model.pb` (limit: 2 GiB).
        assets_bytes: Size of `assets/` (the vocabulary files).
        fused_added_bytes: Bytes the fused stacked lookups add to
            `embedding_bytes` (zero-padded and identity projections, a zero
            row per block; see `StackedEmbedding.fused_for_serving`), 0
            when none was fused.

    Example:

    >>> report = export_for_serving(model, "/tmp/models", "dlrm")  # doctest: +SKIP
    >>> report.path, report.embedding_bytes                 # doctest: +SKIP
    """

    path: pathlib.Path
    version: int
    embedding_bytes: int
    other_variable_bytes: int
    vocabulary_bytes: int
    variables_dir_bytes: int
    saved_model_bytes: int = 0
    assets_bytes: int = 0
    fused_added_bytes: int = 0


def _weight_bytes(model):
    embedding = other = 0
    for weight in model.weights:
        size = int(np.prod(weight.shape)) * np.dtype(weight.dtype).itemsize
        other += size
    for layer in model._flatten_layers(include_self=False):
        # per-feature embedding layers (`input_dim`) and stacked ones (`input_dims`)
        if (hasattr(layer, "input_dim") or hasattr(layer, "input_dims")) and hasattr(
                layer, "output_dim"):
            embedding += sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
                             for w in layer.weights)
    return embedding, other - embedding


@contextlib.contextmanager
def _fused_stacked(model, fuse):
    """Every fusable `StackedEmbedding` of `model` fused for serving while
    the export traces; yields the `FusedLookup`s."""
    from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding

    # identity for the booleans: 1 == True and 0 == False would pass `in`
    if not (fuse is True or fuse is False or fuse in ("batched", "block_diagonal")):
        raise ValueError("`fuse_stacked` must be True, False, 'batched' or "
                         f"'block_diagonal'. Received: {fuse!r}")
    projection = "auto" if fuse is True else fuse
    with contextlib.ExitStack() as stack:
        fused = []
        if fuse:
            for layer in model._flatten_layers(include_self=False):
                if isinstance(layer, StackedEmbedding) and layer.fusable:
                    fused.append(stack.enter_context(layer.fused_for_serving(projection)))
        yield fused


def _directory_bytes(path):
    path = pathlib.Path(path)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) \
        if path.exists() else 0


def _model_signature(model):
    """Input specs from a functional model's `keras.Input`s."""
    if not getattr(model, "inputs", None):
        raise ValueError(
            "Pass `input_signature`: the model has no symbolic inputs to take "
            "it from (a subclassed model, or one not built yet).")
    signature = {}
    for tensor in model.inputs:
        key = tensor.name.split(":")[0]
        signature[key] = tf.TensorSpec(tensor.shape, tensor.dtype, name=key)
    return signature


def _model_inputs_structure(model, features):
    """Features keyed by input name, in the structure the model was built with."""
    names = [t.name.split(":")[0] for t in model.inputs]
    structure = getattr(model, "_inputs_struct", None)
    if isinstance(structure, dict):
        return {key: features[tensor.name.split(":")[0]]
                for key, tensor in structure.items()}
    if len(names) == 1:
        return features[names[0]]
    return [features[n] for n in names]


def _checked(key, tensor, spec):
    """`tensor` after in-graph checks of its rank and fixed dims that name
    the input (the published signature leaves the rank open so these checks
    stay dynamic; a static rank would be folded away at trace time)."""
    shape = spec.shape
    if shape.rank is None:
        return tensor
    dims = shape.as_list()
    expected = "(" + ", ".join("batch" if d is None and i == 0 else
                               "?" if d is None else str(d)
                               for i, d in enumerate(dims)) + ("," if len(dims) == 1 else "") + ")"
    actual = tf.shape(tensor, out_type=tf.int64)
    checks = [tf.debugging.Assert(
        tf.equal(tf.size(actual), len(dims)),
        [f"input `{key}` must have shape {expected}; got shape", actual])]
    with tf.control_dependencies(checks):
        for axis, dim in enumerate(dims):
            if dim is not None:
                checks.append(tf.debugging.Assert(
                    tf.equal(actual[axis], dim),
                    [f"input `{key}` must have shape {expected}; got shape", actual]))
    with tf.control_dependencies(checks):
        return tf.ensure_shape(tf.identity(tensor), shape)


def _same_batch(features, signature, unbatched=()):
    # `unbatched`: inputs whose first axis is not the batch (the flat ids of
    # ragged bags, say), named by the preprocessing's `unbatched_inputs`
    keys = [k for k in signature if signature[k].shape.rank and k not in unbatched]
    checks = []
    for other in keys[1:]:
        checks.append(tf.debugging.Assert(
            tf.equal(tf.shape(features[keys[0]])[0], tf.shape(features[other])[0]),
            [f"inputs `{keys[0]}` and `{other}` must have the same batch size"]))
    return checks


def _named_outputs(outputs, output_names):
    if isinstance(outputs, dict):
        if output_names is None:
            return dict(outputs)
        if isinstance(output_names, dict):
            return {output_names.get(k, k): v for k, v in outputs.items()}
        raise ValueError("`output_names` must be a dict when the model returns a dict.")
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    if output_names is None:
        output_names = [f"output_{i}" for i in range(len(outputs))]
    elif isinstance(output_names, str):
        output_names = [output_names]
    if len(output_names) != len(outputs):
        raise ValueError(f"`output_names` has {len(output_names)} names for "
                         f"{len(outputs)} model outputs.")
    return dict(zip(output_names, outputs))


def _to_serving(value):
    value = tf.convert_to_tensor(value)
    # float16 / bfloat16 outputs (mixed precision) as float32 for clients
    if value.dtype.is_floating and value.dtype != tf.float64:
        value = tf.cast(value, tf.float32)
    # (batch, 1) -> (batch,): one number per example
    if value.shape.rank == 2 and value.shape[-1] == 1:
        value = tf.reshape(value, [-1])
    return value


def export_for_serving(model, base, name, preprocess=None, input_signature=None,
                       output_names=None, version=None, warmup=None,
                       fuse_stacked=True):
    """Exports any Keras model as a TF Serving version `BASE/NAME/VERSION`.

    The `serving_default` signature takes `input_signature`'s inputs, runs
    `preprocess` (raw features -> model inputs) then the model with
    `training=False`, and returns floating outputs as float32, with a
    trailing dimension of 1 dropped (`(batch, 1)` -> `(batch,)`). Each input's
    shape is checked when a request runs, with an error naming the input.

    The version folder is written to a hidden `.partial-*` folder and renamed
    into place, never overwriting a version; concurrent exports to the same
    `BASE/NAME` each get their own version. Load the model with the
    TensorFlow backend (`KERAS_BACKEND=tensorflow`), whatever backend trained it.

    Args:
        model: A Keras model (functional, or subclassed with
            `input_signature` given).
        base: The model base folder (TF Serving's `--model_base_path` parent).
        name: Model name (folder under `base`).
        preprocess: Optional callable `features dict -> model inputs`,
            traced into the signature. A `tf.Module` (for example one holding
            `keras_mixed_dim.datasets.lookup_table.VocabularyTable`s) is saved
            with the model, its vocabulary files as assets. If it has
            `input_signature` (a dict of `tf.TensorSpec`), that is the default
            signature; if it has `check_model(model)`, that runs first (for
            example vocabulary sizes against the model's tables).
        input_signature: `{input name: tf.TensorSpec}` of the raw features;
            default: `preprocess.input_signature`, else the model's inputs.
        output_names: Names of the outputs: a string (one output), a list,
            or a dict renaming a dict of outputs. Default: the model's dict
            keys, else `output_0`, `output_1`, ...
        version: Integer version in `[1, 2**63 - 1]`; default one more than
            the newest.
        warmup: Optional `{input name: array}` request written to
            `assets.extra/tf_serving_warmup_requests` (TF Serving replays it
            on load); it is run through the model first, so a bad request
            fails the export rather than the server.
        fuse_stacked: Whether each `StackedEmbedding` with several width
            groups or projections serves through its `FusedLookup` (one
            gather and one matmul per request instead of a gather per width
            group and a matmul per projected group; the same vectors within
            float32 rounding). The export then saves the fused copy instead
            of the stacked tables, with its projections as one
            block-diagonal matrix where that stays under its cap (an eighth
            of the tables' bytes, or 1 MiB), else as a batched stack (True,
            the default); `"block_diagonal"` or `"batched"` asks for one
            (`"block_diagonal"` is refused above the cap). What the fused
            projections add is `ExportReport.fused_added_bytes`; the export
            holds the tables twice in host memory while it runs. False
            exports the layer's own lookup.

    Returns:
        An `ExportReport`.

    Example:

    >>> report = export_for_serving(model, "/tmp/models", "ratings")  # doctest: +SKIP
    >>> write_models_config("/tmp/models")                  # doctest: +SKIP
    """
    backend.require("tensorflow", "export_for_serving", RuntimeError,
                    "Load the saved model under KERAS_BACKEND=tensorflow.")
    if preprocess is not None and hasattr(preprocess, "check_model"):
        preprocess.check_model(model)
    if input_signature is None:
        input_signature = getattr(preprocess, "input_signature", None)
    if input_signature is None:
        if preprocess is not None:
            raise ValueError("Pass `input_signature`: the raw features `preprocess` takes.")
        input_signature = _model_signature(model)
    if not isinstance(input_signature, dict) or not input_signature:
        raise ValueError("`input_signature` must be a non-empty dict of tf.TensorSpec.")
    keys = sorted(input_signature)
    specs = {k: tf.TensorSpec(input_signature[k].shape, input_signature[k].dtype,
                              name=k) for k in keys}

    def serve(*args):
        features = {k: _checked(k, v, specs[k]) for k, v in zip(keys, args)}
        with tf.control_dependencies(_same_batch(
                features, specs, getattr(preprocess, "unbatched_inputs", ()))):
            features = {k: tf.identity(v) for k, v in features.items()}
        inputs = features if preprocess is None else preprocess(features)
        if preprocess is None:
            inputs = _model_inputs_structure(model, inputs)
        elif isinstance(inputs, dict) and len(getattr(model, "inputs", None) or []) == 1 \
                and len(inputs) == 1:
            inputs = next(iter(inputs.values()))
        outputs = model(inputs, training=False)
        return {k: _to_serving(v) for k, v in _named_outputs(outputs, output_names).items()}

    if warmup is not None:
        missing = set(keys) ^ set(warmup)
        if missing:
            raise ValueError(f"`warmup` must have exactly the inputs {keys}; "
                             f"mismatched: {sorted(missing)}.")

    def write(path):
        archive = keras.export.ExportArchive()
        # Not `archive.track(model)`: the endpoint already captures the
        # model's variables, and tracking the model too writes every variable
        # twice. Tracking the preprocessing saves its tables and assets.
        if isinstance(preprocess, tf.Module):
            archive.track(preprocess)
        endpoint = archive.add_endpoint(
            "serving_default", serve,
            input_signature=[tf.TensorSpec(None, specs[k].dtype, name=k) for k in keys])
        if warmup is not None:
            endpoint(*[tf.constant(np.asarray(warmup[k]), specs[k].dtype)
                       for k in keys])
        archive.write_out(str(path), verbose=False)
        if warmup is not None:
            from keras_mixed_dim.export.warmup import write_warmup_requests

            write_warmup_requests(path, warmup, model_name=name)

    with _fused_stacked(model, fuse_stacked) as fused:  # checks fuse_stacked first
        path, version = write_version(base, name, write, version)
        added = sum(lookup.added_bytes for lookup in fused)
    embedding, other = _weight_bytes(model)
    return ExportReport(
        path, version, embedding + added, other,
        int(getattr(preprocess, "vocabulary_bytes", 0) or 0),
        _directory_bytes(path / "variables"),
        (path / "saved_model.pb").stat().st_size,
        _directory_bytes(path / "assets"),
        added)

