"""Collaborative-filtering models of the mixed-dimension paper: MF and NCF."""

import keras
from keras import layers

from keras_mixed_dim.models.id_safe import IdSafeModel

EMBEDDING_LAYERS = ("user_embedding", "item_embedding")


def matrix_factorization(
    num_users, num_items, user_embedding, item_embedding, global_mean=0.0,
    bias_regularizer=None,
):
    """Matrix factorization with user, item and global biases.

    `rating = u . v + b_user + b_item + mean`.

    Args:
        num_users: Number of user indices (including any OOV index).
        num_items: Number of item indices.
        user_embedding: Layer mapping user indices to vectors; its name must
            be `user_embedding`.
        item_embedding: Same for items (`item_embedding`), same output dim.
        global_mean: The fixed offset (the training mean rating).
        bias_regularizer: Regularizer for the per-id biases.

    Returns:
        A functional `keras.Model` on inputs `{"user": ..., "item": ...}`.

    Example:

    >>> model = matrix_factorization(
    ...     1000, 5000,
    ...     keras.layers.Embedding(1000, 32, name="user_embedding"),
    ...     MixedDimEmbedding(5000, 32, name="item_embedding"), global_mean=3.5)
    >>> model.compile(optimizer="adam", loss="mse")
    >>> model.predict({"user": np.array([1]), "item": np.array([7])}, verbose=0).shape
    (1, 1)
    """
    user, item = _inputs()
    u = user_embedding(user)
    v = item_embedding(item)
    dot = layers.Dot(axes=-1, name="dot")([u, v])
    user_bias = _bias(num_users, "user_bias", bias_regularizer)(user)
    item_bias = _bias(num_items, "item_bias", bias_regularizer)(item)
    rating = layers.Add(name="add")([dot, user_bias, item_bias])
    rating = layers.Rescaling(1.0, offset=float(global_mean), name="rating")(rating)
    return IdSafeModel({"user": user, "item": item}, rating, name="mf")


def neural_cf(user_embedding, item_embedding, global_mean=0.0, hidden=(128, 128, 32),
              history_embedding=None, history_size=None):
    """NCF as in the paper: concatenated embeddings through an MLP with LeakyReLU.

    Args:
        user_embedding: Layer for user indices, named `user_embedding`.
        item_embedding: Layer for item indices, named `item_embedding`.
        global_mean: Fixed offset added to the output.
        hidden: Widths of the hidden layers.
        history_embedding: Optional layer with a combiner for a bag of item
            indices per rating (the user's last rated items, say): the model
            then takes input `"history"` of `history_size` indices, -1 pads,
            and concatenates the bag's vector too.
        history_size: Ids per history bag (with `history_embedding`).

    Returns:
        A functional `keras.Model` on inputs `{"user": ..., "item": ...}`
        (and `"history"`).

    Example:

    >>> model = neural_cf(keras.layers.Embedding(1000, 32, name="user_embedding"),
    ...                   MixedDimEmbedding(5000, 32, name="item_embedding"))
    >>> model.compile(optimizer="adam", loss="mse")
    """
    user, item = _inputs()
    inputs = {"user": user, "item": item}
    vectors = [user_embedding(user), item_embedding(item)]
    if history_embedding is not None:
        if getattr(history_embedding, "combiner", None) is None or not (
                isinstance(history_size, int) and history_size > 0):
            raise ValueError(
                "`history_embedding` needs a combiner (it reduces a bag of items) "
                f"and `history_size` a positive int. Received: {history_embedding!r}, "
                f"history_size={history_size!r}")
        history = keras.Input(shape=(history_size,), dtype="int32", name="history")
        inputs["history"] = history
        vectors.append(history_embedding(history))
    x = layers.Concatenate(name="concat")(vectors)
    for i, width in enumerate(hidden):
        x = layers.Dense(width, name=f"dense_{i}")(x)
        x = layers.LeakyReLU(name=f"leaky_relu_{i}")(x)
    x = layers.Dense(1, name="score")(x)
    rating = layers.Rescaling(1.0, offset=float(global_mean), name="rating")(x)
    return IdSafeModel(inputs, rating, name="ncf")


def _inputs():
    return (
        keras.Input(shape=(), dtype="int32", name="user"),
        keras.Input(shape=(), dtype="int32", name="item"),
    )


def _bias(num_ids, name, regularizer):
    embedding = layers.Embedding(
        num_ids, 1, embeddings_initializer="zeros",
        embeddings_regularizer=regularizer, name=name,
    )
    return lambda ids: layers.Reshape((1,), name=f"{name}_flat")(embedding(ids))


