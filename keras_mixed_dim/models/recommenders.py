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


def neural_cf(user_embedding, item_embedding, global_mean=0.0, hidden=(128, 128, 32)):
    """NCF as in the paper: concatenated embeddings through an MLP with LeakyReLU.

    Args:
        user_embedding: Layer for user indices, named `user_embedding`.
        item_embedding: Layer for item indices, named `item_embedding`.
        global_mean: Fixed offset added to the output.
        hidden: Widths of the hidden layers.

    Returns:
        A functional `keras.Model` on inputs `{"user": ..., "item": ...}`.
    """
    user, item = _inputs()
    x = layers.Concatenate(name="concat")(
        [user_embedding(user), item_embedding(item)]
    )
    for i, width in enumerate(hidden):
        x = layers.Dense(width, name=f"dense_{i}")(x)
        x = layers.LeakyReLU(name=f"leaky_relu_{i}")(x)
    x = layers.Dense(1, name="score")(x)
    rating = layers.Rescaling(1.0, offset=float(global_mean), name="rating")(x)
    return IdSafeModel({"user": user, "item": item}, rating, name="ncf")


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


