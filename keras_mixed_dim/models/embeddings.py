"""One place that turns an embedding choice into a layer."""

import keras

from keras_mixed_dim.layers import MixedDimEmbedding

EMBEDDING_KINDS = ("uniform", "mixed")


def make_embedding(
    kind,
    input_dim,
    output_dim,
    counts=None,
    alpha=0.3,
    num_blocks=4,
    budget=None,
    embeddings_regularizer=None,
    name=None,
):
    """A uniform `keras.layers.Embedding` or a `MixedDimEmbedding`.

    Args:
        kind: `"uniform"` or `"mixed"`.
        input_dim: Number of ids.
        output_dim: Uniform dim, or the base (output) dim of the mixed layer.
        counts: Per-id counts for the mixed layer's blocks (ignored for
            uniform). Counts already in rank order need no remap table.
        alpha, num_blocks, budget: The mixed layer's planning arguments.
        embeddings_regularizer: Regularizer for the tables.
        name: Layer name.
    """
    if kind == "uniform":
        return keras.layers.Embedding(
            input_dim,
            output_dim,
            embeddings_regularizer=embeddings_regularizer,
            name=name,
        )
    if kind == "mixed":
        return MixedDimEmbedding(
            input_dim,
            output_dim,
            counts=counts,
            alpha=alpha,
            num_blocks=min(num_blocks, input_dim),
            budget=budget,
            embeddings_regularizer=embeddings_regularizer,
            name=name,
        )
    raise ValueError(f"`kind` must be one of {EMBEDDING_KINDS}. Received: {kind!r}")


def embedding_params(model, names):
    """Parameters of the named embedding layers of `model`."""
    return sum(model.get_layer(name).count_params() for name in names)
