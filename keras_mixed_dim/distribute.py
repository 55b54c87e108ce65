"""Scale-out on existing engines: tf.distribute on TensorFlow, keras.distribution
(DataParallel / ModelParallel) on JAX. No home-made parameter server."""

import contextlib
import os

import keras

from keras_mixed_dim import backend
from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding

DISTRIBUTE_CHOICES = ("mirrored", "multiworker", "data", "model")


def sharded_table_paths(embeddings, shards, min_rows=1):
    """Variable paths of the tables whose rows can be split over `shards`.

    Every block table of a `MixedDimEmbedding`, every stacked table
    (`<layer>/stacked_w<w>[p]_embeddings`) of a `StackedEmbedding` (and the
    table of a uniform `Embedding`) with at least `min_rows` rows that
    divide evenly; the others stay replicated (JAX shards need equal parts).
    """
    paths = []
    for layer in embeddings:
        if isinstance(layer, StackedEmbedding):
            for group in layer.groups:
                if group.rows >= min_rows and group.rows % shards == 0:
                    paths.append(f"{layer.name}/{group.name}_embeddings")
        elif isinstance(layer, MixedDimEmbedding):
            for i, block in enumerate(layer.plan.blocks):
                if block.storage == "full" and block.rows >= min_rows and (
                    block.rows % shards == 0
                ):
                    paths.append(f"{layer.name}/block_{i}_embeddings")
        elif isinstance(layer, keras.layers.Embedding):
            if layer.input_dim >= min_rows and layer.input_dim % shards == 0:
                paths.append(f"{layer.name}/embeddings")
    return paths


def embedding_layout_map(embeddings, mesh, axis="model", min_rows=1):
    """A `keras.distribution.LayoutMap` that shards table rows over `axis`.

    Keys are the layers' stable weight paths (`<layer>/block_<i>_embeddings`),
    so call this with the embedding layers before the model builds them.
    """
    layout_map = keras.distribution.LayoutMap(mesh)
    shards = mesh.shape[mesh.axis_names.index(axis)]
    for path in sharded_table_paths(embeddings, shards, min_rows):
        layout_map["^" + path + "$"] = (axis, None)
    return layout_map


def initialize_processes():
    """Joins a multi-process JAX job when the environment describes one.

    Calls `keras.distribution.initialize()` when
    `KERAS_DISTRIBUTION_NUM_PROCESSES` is above 1 (it also reads
    `KERAS_DISTRIBUTION_JOB_ADDRESSES` and `KERAS_DISTRIBUTION_PROCESS_ID`).
    Call it first, before anything touches a JAX device.

    Returns:
        Whether this process joined a multi-process job.
    """
    value = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")
    try:
        processes = int(value)
    except ValueError:
        raise ValueError("KERAS_DISTRIBUTION_NUM_PROCESSES must be an integer. "
                         f"Received: {value!r}") from None
    if processes <= 1:
        return False
    keras.distribution.initialize()
    return True


def jax_distribution(kind, embeddings=None, min_rows=1):
    """Sets a keras.distribution for `kind` ("data" or "model") on all devices.

    For several processes, call `initialize_processes()` first (it calls
    `keras.distribution.initialize()`, which reads the coordinator address,
    process count and id from the environment); the devices then span every
    host.
    """
    devices = keras.distribution.list_devices()
    if kind == "data":
        distribution = keras.distribution.DataParallel(devices=devices)
    elif kind == "model":
        mesh = keras.distribution.DeviceMesh(
            shape=(1, len(devices)), axis_names=("batch", "model"), devices=devices)
        layout_map = embedding_layout_map(embeddings or [], mesh, "model", min_rows)
        distribution = keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch")
    else:
        raise ValueError(f"`kind` must be 'data' or 'model'. Received: {kind!r}")
    keras.distribution.set_distribution(distribution)
    return distribution


def tf_strategy(kind):
    """A tf.distribute strategy: "mirrored" (GPUs of one host) or
    "multiworker" (hosts listed in the TF_CONFIG environment variable).

    For "multiworker" this also applies `enable_multiworker_fit`, without
    which Keras 3's `model.fit` fails under that strategy. Needs TensorFlow
    (see `keras_mixed_dim.backend.tensorflow.strategies`).
    """
    from keras_mixed_dim.backend.tensorflow.strategies import strategy

    return strategy(kind)


_BACKEND_OF = {"mirrored": "tensorflow", "multiworker": "tensorflow",
               "data": "jax", "model": "jax"}


def strategy_scope(kind):
    """The context to create and compile a model in for `--distribute kind`.

    A tf.distribute strategy's scope for "mirrored" / "multiworker"; nothing
    for None, "data" and "model" (call `jax_distribution` inside it, once the
    embedding layers exist). Fails early when the backend cannot run `kind`.
    Enter it before any TensorFlow op runs: a multi-worker strategy must
    configure TF's collective ops at program start.
    """
    if kind is None:
        return contextlib.nullcontext()
    if kind not in _BACKEND_OF:
        raise ValueError(f"`kind` must be one of {DISTRIBUTE_CHOICES} or None. "
                         f"Received: {kind!r}")
    if backend.NAME != _BACKEND_OF[kind]:
        raise ValueError(f"--distribute {kind} needs KERAS_BACKEND={_BACKEND_OF[kind]}; "
                         f"this process runs {backend.NAME}.")
    if _BACKEND_OF[kind] == "tensorflow":
        return tf_strategy(kind).scope()
    return contextlib.nullcontext()
