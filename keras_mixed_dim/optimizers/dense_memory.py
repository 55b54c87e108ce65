"""One call for the examples: approximate activations and low-rank gradients."""

import keras

EMBEDDING_CLASSES = ("Embedding", "MixedDimEmbedding", "StackedEmbedding")


def dense_memory_options(model, optimizer, approx_bits=None, low_rank=None,
                         min_size=4096):
    """Applies the dense-tower memory savers chosen on a command line.

    Args:
        model: A built functional or Sequential model.
        optimizer: The optimizer to compile with (instance or name).
        approx_bits: `None`, 8 or 4: convert the model's `Dense` layers to
            `ApproxActivationDense` with that many bits
            (`approximate_activations`).
        low_rank: `None` or a rank `k`: wrap the optimizer in
            `LowRankGradients(optimizer, rank=k, min_size=min_size)`, leaving
            out every variable of the model's embedding layers
            (`keras.layers.Embedding`, `MixedDimEmbedding`,
            `StackedEmbedding`, and any layer with "embedding" in its name).
        min_size: Smallest kernel (entries) given a low-rank gradient.

    Returns:
        `(model, optimizer)`, the originals when both options are `None`.

    Example:

    >>> model, optimizer = dense_memory_options(model, "adam", approx_bits=8,
    ...                                         low_rank=16)  # doctest: +SKIP
    >>> model.compile(optimizer=optimizer, loss="mse")      # doctest: +SKIP
    """
    from keras_mixed_dim.layers.approx_activation_dense import approximate_activations
    from keras_mixed_dim.optimizers.low_rank_gradients import DEFAULT_EXCLUDE
    from keras_mixed_dim.optimizers.low_rank_gradients import LowRankGradients

    if approx_bits is not None:
        model = approximate_activations(model, bits=approx_bits)
    if low_rank is not None:
        exclude = list(DEFAULT_EXCLUDE)
        for layer in model.layers:
            if type(layer).__name__ in EMBEDDING_CLASSES:
                exclude.extend(v.path for v in layer.weights)
        optimizer = LowRankGradients(keras.optimizers.get(optimizer), rank=low_rank,
                                     min_size=min_size, exclude=exclude)
    return model, optimizer
