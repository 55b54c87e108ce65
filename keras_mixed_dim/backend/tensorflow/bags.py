"""Ragged and sparse bags of ids to the padded form the layers take.

Everything is shaped by the batch and the bag size, never by the
vocabulary, and the padded width is fixed, so the layer behind it keeps
static shapes (XLA). A bag longer than `bag_size` keeps its first
`bag_size` ids (row order: the ragged values' order, or a SparseTensor's
column order) and drops the rest.
"""

import tensorflow as tf


def padded_bags(ids, weights, bag_size, layer_name=None):
    """`(ids, weights)` as dense `(batch, bag_size)` tensors.

    Args:
        ids: A rank-2 `tf.RaggedTensor` or `tf.SparseTensor` of ids (one
            bag per row), or a dense tensor when only `weights` is ragged
            or sparse.
        weights: None, or per-id weights of the same kind and row lengths.
        bag_size: Width of the padded bags; longer bags are cut to their
            first `bag_size` ids. A `SparseTensor` of static width may leave
            it None (its width is used).
        layer_name: For error messages.

    Returns:
        Padded ids (the ids' dtype; -1 marks padding) and float32 weights
        (0 for padding), or None when `weights` is None.
    """
    where = f"Layer {layer_name!r}" if layer_name else "The layer"
    kinds = {type(x).__name__ for x in (ids, weights) if x is not None}
    if len(kinds) != 1:
        raise ValueError(
            f"{where}: ids and weights must both be ragged, both sparse or both "
            f"dense. Received {type(ids).__name__} ids and "
            f"{type(weights).__name__} weights.")
    if isinstance(ids, tf.SparseTensor):
        if bag_size is None and ids.shape.rank == 2 and ids.shape[1] is not None:
            bag_size = int(ids.shape[1])
        ids = _sparse_to_ragged(ids, where)
        if weights is not None:
            weights = _sparse_to_ragged(weights, where)
    if ids.shape.rank != 2 or ids.ragged_rank != 1:
        raise ValueError(
            f"{where} takes ragged ids of shape (batch, None): one bag per row. "
            f"Received shape {ids.shape} (ragged_rank {ids.ragged_rank}).")
    if bag_size is None:
        raise ValueError(
            f"{where} got ragged or sparse ids but has no `bag_size`: give the "
            "layer bag_size=k (the padded width; longer bags keep their first "
            "k ids) so its shapes stay static.")
    if not ids.dtype.is_integer and not ids.dtype.is_floating:
        raise TypeError(f"{where} takes integer ids; received dtype {ids.dtype.name!r}.")
    padded = ids.to_tensor(default_value=tf.cast(-1, ids.dtype),
                           shape=[None, bag_size])
    if weights is None:
        return padded, None
    weights = tf.cast(weights, tf.float32)
    with tf.control_dependencies([tf.debugging.assert_equal(
            ids.row_lengths(), weights.row_lengths(),
            message=f"{where}: ids and weights differ in row lengths")]):
        padded_weights = weights.to_tensor(default_value=0.0, shape=[None, bag_size])
    return padded, padded_weights


def _sparse_to_ragged(sparse, where):
    if sparse.shape.rank != 2:
        raise ValueError(
            f"{where} takes sparse ids of rank 2 (batch, bag). Received rank "
            f"{sparse.shape.rank}.")
    # from_sparse needs row-major order; the bag is the row's entries in
    # column order, whatever columns they sit at (as in
    # tf.nn.safe_embedding_lookup_sparse)
    return tf.RaggedTensor.from_sparse(tf.sparse.reorder(sparse))
