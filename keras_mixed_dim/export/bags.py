"""Ragged bags in a serving signature: each feature's ids sent flat with
their per-example counts, padded in the graph for a model of padded bags."""

import numpy as np
import tensorflow as tf

from keras_mixed_dim.backend.tensorflow.bags import padded_bags
from keras_mixed_dim.checks import check_positive_int


class RaggedBagInputs(tf.Module):
    """Preprocessing for `export_for_serving`: ragged bags in, padded out.

    A model of padded bags (such as `dlrm(bag_sizes=...)`) takes each
    feature's bag in `bag_sizes[f]` consecutive columns of one int input
    (`ids_input`), -1 padding. A client rarely has its bags padded; with
    this module the signature takes, for each feature `name`,
    `{name}_ids` (int64, `(total ids,)`: the batch's bags end to end) and
    `{name}_lengths` (int64, `(batch,)`), plus `{name}_weights` (float32,
    like the ids) when the model takes `weights_input`, and every other
    model input as it is. The bags are padded in the graph with stock ops
    (a gather), nothing the size of a vocabulary; a bag longer than its
    feature's bag size keeps its first ids (the layers' cut rule), and ids
    that do not add up to the lengths fail the request with an error
    naming the feature.

    Example:

    >>> model = dlrm(layers, 16, bag_sizes=[3, 1])
    >>> bags = RaggedBagInputs(model, [3, 1], feature_names=["tags", "site"])
    >>> export_for_serving(model, base, "dlrm", preprocess=bags)

    Args:
        model: The functional model (its inputs give the other inputs' specs).
        bag_sizes: Ids per feature, as the model was built with.
        ids_input: Name of the model's padded ids input.
        weights_input: Optional name of its per-id weights input.
        feature_names: One name per feature (default `feature_{f}`).
    """

    def __init__(self, model, bag_sizes, ids_input="categorical", weights_input=None,
                 feature_names=None):
        super().__init__(name="ragged_bag_inputs")
        if not len(bag_sizes):
            raise ValueError(f"`bag_sizes` must not be empty. Received: {bag_sizes!r}")
        self.bag_sizes = tuple(check_positive_int(f"bag_sizes[{f}]", k)
                               for f, k in enumerate(bag_sizes))
        if feature_names is None:
            feature_names = [f"feature_{f}" for f in range(len(self.bag_sizes))]
        if len(feature_names) != len(self.bag_sizes) or len(set(feature_names)) != len(
                feature_names):
            raise ValueError(
                f"`feature_names` must be {len(self.bag_sizes)} distinct names, one per "
                f"feature. Received: {feature_names!r}")
        self.feature_names = tuple(feature_names)
        specs = {t.name.split(":")[0]: t for t in model.inputs}
        for name in (ids_input, weights_input):
            if name is not None and name not in specs:
                raise ValueError(f"The model has no input {name!r}; its inputs are "
                                 f"{sorted(specs)}.")
        width = specs[ids_input].shape[-1]
        if width != sum(self.bag_sizes):
            raise ValueError(
                f"Input {ids_input!r} has {width} columns; bag_sizes add up to "
                f"{sum(self.bag_sizes)}.")
        self.ids_input, self.weights_input = ids_input, weights_input
        self._ids_dtype = specs[ids_input].dtype
        self.input_signature = {}
        # flat per-id inputs: their first axis is not the batch
        self.unbatched_inputs = tuple(
            f"{name}_{part}" for name in self.feature_names for part in (
                ("ids", "weights") if weights_input is not None else ("ids",)))
        for name in self.feature_names:
            self.input_signature[f"{name}_ids"] = tf.TensorSpec([None], tf.int64)
            self.input_signature[f"{name}_lengths"] = tf.TensorSpec([None], tf.int64)
            if weights_input is not None:
                self.input_signature[f"{name}_weights"] = tf.TensorSpec([None], tf.float32)
        self._passed_through = []
        for name, tensor in specs.items():
            if name not in (ids_input, weights_input):
                if name in self.input_signature:
                    raise ValueError(f"Model input {name!r} clashes with a bag input.")
                self.input_signature[name] = tf.TensorSpec(tensor.shape, tensor.dtype)
                self._passed_through.append(name)

    def __call__(self, features):
        ids, weights = [], []
        for name, size in zip(self.feature_names, self.bag_sizes):
            values, lengths = features[f"{name}_ids"], features[f"{name}_lengths"]
            check = tf.debugging.Assert(
                tf.logical_and(tf.equal(tf.reduce_sum(lengths), tf.size(values,
                                                                        tf.int64)),
                               tf.reduce_all(lengths >= 0)),
                [f"`{name}_lengths` must be >= 0 and add up to the number of "
                 f"`{name}_ids`"])
            with tf.control_dependencies([check]):
                ragged = tf.RaggedTensor.from_row_lengths(tf.identity(values), lengths,
                                                          validate=False)
                ragged_weights = None
                if self.weights_input is not None:
                    ragged_weights = tf.RaggedTensor.from_row_lengths(
                        features[f"{name}_weights"], lengths, validate=False)
            padded, padded_weights = padded_bags(ragged, ragged_weights, size, name)
            ids.append(padded)
            weights.append(padded_weights)
        inputs = {k: v for k, v in features.items() if k in self._passed_through}
        ids = tf.concat(ids, axis=1)
        dtype = tf.as_dtype(self._ids_dtype)
        if dtype.is_integer and dtype.size < 8:
            # an int64 id beyond the model's int32 input would wrap onto a
            # valid id (2**32 + 3 -> 3) and read that id's row: -1 instead
            ids = tf.where((ids < dtype.min) | (ids > dtype.max),
                           tf.constant(-1, ids.dtype), ids)
        inputs[self.ids_input] = tf.cast(ids, dtype)
        if self.weights_input is not None:
            inputs[self.weights_input] = tf.concat(weights, axis=1)
        return inputs


def ragged_request(bags, weights=None, feature_names=None):
    """The request `RaggedBagInputs` takes, from per-feature lists of bags:
    `{name}_ids` / `{name}_lengths` (and `{name}_weights`) numpy arrays.

    Args:
        bags: Per feature, a list of bags (lists of ids), one bag per example.
        weights: Optional per feature a list of per-id weights, like `bags`.
        feature_names: Names of the features (default `feature_0`, ...).

    Returns:
        A dict of numpy arrays: `{name}_ids` (int64, all ids end to end),
        `{name}_lengths` (int64, ids per example) and, with weights,
        `{name}_weights` (float32).

    Example:

    >>> request = ragged_request([[[3, 17], []]], feature_names=["tags"])
    >>> request["tags_ids"], request["tags_lengths"]
    (array([ 3, 17]), array([2, 0]))
    """
    if feature_names is None:
        feature_names = [f"feature_{f}" for f in range(len(bags))]
    request = {}
    for f, (name, rows) in enumerate(zip(feature_names, bags)):
        request[f"{name}_ids"] = np.asarray(
            [i for row in rows for i in row], dtype=np.int64).reshape(-1)
        request[f"{name}_lengths"] = np.asarray([len(r) for r in rows], dtype=np.int64)
        if weights is not None:
            request[f"{name}_weights"] = np.asarray(
                [w for row in weights[f] for w in row], dtype=np.float32).reshape(-1)
    return request
