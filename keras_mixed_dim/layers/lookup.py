"""`IdLookupLayer`: the id rule, combiners, masking, output shapes and
configuration shared by the embedding layers of one vocabulary
(`MixedDimEmbedding`, `QREmbedding`, `HashingEmbedding`,
`HashedMemoryEmbedding`).

A subclass builds its weights and implements `lookup(ids)`, which receives
int32 ids that are all in `[0, input_dim)` (invalid ones were replaced by 0)
and returns float32 vectors `ids.shape + (output_dim,)`. This class zeroes
the vectors of invalid ids (and of padding in a bag) with a select, so they
get no gradient, applies the combiner and casts to the compute dtype.
`MixedDimEmbedding` overrides `call` instead: it maps ids to ranks and
looks ranks up block by block, with -1 (an all-zero vector) for invalid
ids, but takes its inputs through `checked_inputs` like the others.
`rebuild_variables` replaces a built layer's variables (re-planning).

The bag rule of every table layer of the package (`MixedDimEmbedding` and
`StackedEmbedding` included) lives here, in `bag_coefficients` and
`reduce_bag`: a bag's vector is `sum_j c_j x_j` with `c_j` from the ids'
validity, the optional per-id weights and the combiner, exactly as
`tf.nn.safe_embedding_lookup_sparse` weighs them.
"""

import numpy as np
from keras import layers
from keras import ops

from keras_mixed_dim.backend import is_ragged_or_sparse
from keras_mixed_dim.backend import padded_bags
from keras_mixed_dim.backend import saturating_scatter_add
from keras_mixed_dim.checks import check_positive_int
from keras_mixed_dim.layers.ids import INT32_MAX
from keras_mixed_dim.layers.ids import check_bag_rank
from keras_mixed_dim.layers.ids import is_host_array
from keras_mixed_dim.layers.ids import sanitize_numpy_ids
from keras_mixed_dim.layers.ids import valid_int_ids

COMBINERS = (None, "sum", "mean", "sqrtn")


def check_combiner(combiner):
    """`combiner` if it is one of `COMBINERS`, else a ValueError naming it."""
    if combiner not in COMBINERS:
        raise ValueError(
            f"`combiner` must be one of {COMBINERS}. Received: {combiner!r}")
    return combiner


def check_bag_size(bag_size, name="bag_size"):
    """None or a positive int: the padded width ragged / sparse ids get."""
    if bag_size is None:
        return None
    return check_positive_int(name, bag_size)


def check_weights(weights, ids_shape, combiner, layer_name):
    """Per-id weights need a combiner and the ids' shape."""
    if weights is None:
        return None
    if combiner is None:
        raise ValueError(
            f"Layer {layer_name!r} got per-id `weights` but has combiner=None; "
            "weights scale the ids of a bag, so give the layer a combiner "
            f"({COMBINERS[1:]}).")
    weights = ops.cast(weights, "float32")
    if len(weights.shape) != len(ids_shape) or any(
            a is not None and b is not None and a != b
            for a, b in zip(weights.shape, ids_shape)):
        raise ValueError(
            f"Layer {layer_name!r}: `weights` must have the shape of the ids "
            f"{tuple(ids_shape)}. Received weights of shape {tuple(weights.shape)}.")
    return weights


def bag_coefficients(valid, weights, combiner, bags=None):
    """Per-id factors `c` such that a bag's vector is `sum_j c_j x_j`.

    The weighting of `tf.nn.safe_embedding_lookup_sparse`: invalid ids
    (padding, out of range) get 0; `"sum"` takes each valid id's weight
    (1 without weights); `"mean"` and `"sqrtn"` also leave out ids whose
    weight is not positive, then divide by `sum_j w_j` or
    `sqrt(sum_j w_j**2)` over the bag. A bag with nothing left gets all
    zeros, and so do its gradients (no division by zero anywhere, not even
    in the backward pass).

    Args:
        valid: Boolean `(..., bag)`: which ids are valid.
        weights: None or float32 weights of the same shape.
        combiner: `"sum"`, `"mean"` or `"sqrtn"`.
        bags: Optional numpy 0/1 matrix `(positions, num_bags)` when the last
            axis holds several bags end to end (`StackedEmbedding`): column
            `b` marks the positions of bag `b`. Default: the whole last axis
            is one bag.

    Returns:
        None when `c` is just "valid or not" (`"sum"` without weights: the
        caller's zeroed invalid vectors summed as they are), else float32
        coefficients of `valid`'s shape.
    """
    if weights is None:
        if combiner == "sum":
            return None
        coefficients = ops.cast(valid, "float32")
    else:
        keep = valid
        if combiner != "sum":
            keep = ops.logical_and(valid, ops.greater(weights, 0.0))
        # a select, not a product: NaN or inf weights of padding never leak
        coefficients = ops.where(keep, weights, 0.0)
    if combiner == "sum":
        return coefficients
    total = coefficients if combiner == "mean" else ops.square(coefficients)
    if bags is None:
        total = ops.sum(total, axis=-1, keepdims=True)
    else:
        bags = np.asarray(bags, dtype="float32")
        total = ops.matmul(ops.matmul(total, ops.convert_to_tensor(bags)),
                           ops.convert_to_tensor(np.ascontiguousarray(bags.T)))
    # Empty bags divide by 1 (their coefficients are all 0); the select comes
    # before the sqrt so its gradient at 0 is never formed.
    positive = ops.greater(total, 0.0)
    total = ops.where(positive, total, 1.0)
    if combiner == "sqrtn":
        total = ops.sqrt(total)
    return ops.divide(coefficients, total)


def reduce_bag(values, coefficients):
    """`sum_j c_j x_j` over axis -2 of `values` `(..., bag, d)`; a plain sum
    when `coefficients` is None."""
    if coefficients is not None:
        values = ops.multiply(values, ops.expand_dims(
            ops.cast(coefficients, values.dtype), -1))
    return ops.sum(values, axis=-2)


def add_lookup_counts(counts_variable, positions, valid, half_life=None):
    """Adds one count per valid lookup at `positions` (flat, in range) of
    `counts_variable`, decaying all counts first when `half_life` is set.

    Exact (int32) counts saturate at the int32 maximum: a long run never
    wraps a hot id's count negative (which would re-rank it into the last
    block). Shared by `MixedDimEmbedding` and `StackedEmbedding`.
    """
    dtype = counts_variable.dtype
    if not half_life and saturating_scatter_add(
            counts_variable, positions, ops.cast(valid, dtype)):
        return
    # Decay rescales every count anyway, and JAX updates donated buffers
    # in place, so the dense update is the portable path.
    size = int(counts_variable.shape[0])
    delta = ops.scatter(ops.expand_dims(positions, -1), ops.cast(valid, dtype), (size,))
    counts = counts_variable.value
    if half_life:
        counts = counts * (0.5 ** (1.0 / half_life))
        counts_variable.assign(counts + delta)
        return
    headroom = ops.subtract(ops.cast(INT32_MAX, dtype), counts)
    counts_variable.assign(counts + ops.minimum(delta, headroom))


class TableLayer(layers.Layer):
    """Base of the package's layers that hold tables (not used on its own):
    under a mixed precision policy their weights stay float32 and are read
    as float32; only the outputs are cast to the compute dtype."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.autocast = False

    def add_weight(self, *args, autocast=False, **kwargs):
        # Keras opens an autocast scope around a layer whose compute and
        # variable dtypes differ whatever `self.autocast` says, and inside it
        # a variable is read in the compute dtype unless it opts out
        return super().add_weight(*args, autocast=autocast, **kwargs)


class IdLookupLayer(TableLayer):
    """Base of the embedding layers of one vocabulary (not used on its own).

    Args:
        input_dim: Number of ids.
        output_dim: Width of every output vector.
        combiner: None, `"sum"`, `"mean"` or `"sqrtn"` (reduce the last id
            axis, the bag; see `bag_coefficients`).
        mask_zero: Whether id 0 is padding.
        bag_size: Optional padded bag width for `tf.RaggedTensor` /
            `tf.SparseTensor` ids (TensorFlow): longer bags keep their first
            `bag_size` ids.
        **kwargs: Base layer keyword arguments.
    """

    def __init__(self, input_dim, output_dim, combiner=None, mask_zero=False,
                 bag_size=None, **kwargs):
        input_dim = check_positive_int("input_dim", input_dim)
        output_dim = check_positive_int("output_dim", output_dim)
        check_combiner(combiner)
        bag_size = check_bag_size(bag_size)
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.combiner = combiner
        self.bag_size = bag_size
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero and combiner is None

    def __call__(self, inputs, *args, **kwargs):
        inputs, kwargs = prepare_bag_inputs(self, inputs, kwargs)
        return super().__call__(inputs, *args, **kwargs)

    def ids_and_valid(self, inputs):
        """`(safe_ids, valid)`: int32 ids with every invalid one set to 0."""
        ids, valid = valid_int_ids(inputs, self.input_dim, self.name)
        if self.mask_zero and self.combiner is not None:
            valid = ops.logical_and(valid, ops.not_equal(ids, 0))
        safe = ops.cast(ops.where(valid, ids, ops.zeros_like(ids)), "int32")
        return safe, valid

    def call(self, inputs, weights=None):
        return self.lookup_and_combine(inputs, self.lookup, weights)

    def checked_inputs(self, inputs, weights=None):
        """What every `call` does first: ragged / sparse ids that reach it
        padded, the bag rank and the weights' shape checked.

        Returns:
            `(inputs, weights)`, weights float32 or None.
        """
        inputs, weights = padded_in_graph(self, inputs, weights)
        check_bag_rank(inputs.shape, self.combiner, self.name)
        weights = check_weights(weights, inputs.shape, self.combiner, self.name)
        return inputs, weights

    def lookup_and_combine(self, inputs, lookup, weights=None):
        """Applies the id rule, `lookup` on the safe ids, and the combiner
        (weighted by `weights`, see `bag_coefficients`)."""
        inputs, weights = self.checked_inputs(inputs, weights)
        ids, valid = self.ids_and_valid(inputs)
        outputs = lookup(ids)
        outputs = ops.where(ops.expand_dims(valid, -1), outputs,
                            ops.zeros_like(outputs))
        if self.combiner is not None:
            outputs = reduce_bag(
                outputs, bag_coefficients(valid, weights, self.combiner))
        return ops.cast(outputs, self.compute_dtype)

    def lookup(self, ids):
        raise NotImplementedError

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero or self.combiner is not None:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.combiner is None:
            return (*input_shape, self.output_dim)
        check_bag_rank(input_shape, self.combiner, self.name)
        return (*input_shape[:-1], self.output_dim)

    @property
    def params(self):
        """Trainable float parameters of the layer."""
        raise NotImplementedError

    @property
    def bytes(self):
        """Bytes of everything the layer stores (float32 weights plus every
        auxiliary array: hash constants, signatures)."""
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update({
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "combiner": self.combiner,
            "mask_zero": self.mask_zero,
            "bag_size": self.bag_size,
        })
        return config


def rebuild_variables(layer, change):
    """Drops every variable of the built `layer`, calls `change()` (which
    sets what the new variables follow, e.g. a new plan) and builds the
    layer again.

    Re-planning must replace the variables of the layer object the model
    holds, and Keras has no public API to untrack a built layer's variables
    or add new ones to it: this is the one place the package uses the
    private tracker calls for it (`Layer._untrack_variable`,
    `Layer._tracker.unlock()`, as Keras's own `Layer.quantize` does), so a
    Keras change breaks one function.

    Args:
        layer: A built Keras layer whose `build()` creates all its variables.
        change: Function of no arguments, called between the two.
    """
    if not layer.built:
        raise ValueError(f"Layer {layer.name!r} is not built: nothing to rebuild.")
    for variable in list(layer.weights):
        layer._untrack_variable(variable)
    change()
    layer.built = False
    layer._tracker.unlock()
    layer.build()


def padded_in_graph(layer, inputs, weights):
    """Ragged / sparse ids that reach `call` directly (a functional model's
    `keras.Input(ragged=True)` traced symbolically) padded as in
    `prepare_bag_inputs`."""
    if is_ragged_or_sparse(inputs) or is_ragged_or_sparse(weights):
        return _padded(layer, inputs, weights)
    return inputs, weights


def _padded(layer, inputs, weights):
    if layer.combiner is None:
        # padded per-id vectors would come back with -1 padding and no mask
        raise ValueError(
            f"Layer {layer.name!r} got tf.RaggedTensor / tf.SparseTensor ids, which "
            "are bags: give the layer a combiner "
            f"({COMBINERS[1:]}) and a bag_size, or pad the ids yourself.")
    return padded_bags(inputs, weights, layer.bag_size, layer.name)


def prepare_bag_inputs(layer, inputs, kwargs):
    """What every table layer's `__call__` does to its ids and `weights=`
    before Keras converts them.

    `tf.RaggedTensor` / `tf.SparseTensor` ids (and weights) become padded
    `(batch, bag_size)` ids (-1 for padding) and weights, in the graph; numpy
    ids are range-checked on the host (int64 ids >= 2**31 would wrap onto
    valid ids on JAX without x64, and NaN would cast to id 0); numpy
    weights become float32.
    """
    weights = kwargs.get("weights")
    if layer.combiner is None and (getattr(inputs, "ragged", False) is True
                                   or getattr(inputs, "sparse", False) is True):
        # a symbolic keras.Input(ragged=True / sparse=True)
        _padded(layer, inputs, weights)
    if is_ragged_or_sparse(inputs) or is_ragged_or_sparse(weights):
        inputs, weights = _padded(layer, inputs, weights)
        kwargs = dict(kwargs, weights=weights)
    if is_host_array(inputs):
        inputs = sanitize_numpy_ids(inputs, layer.input_dim, layer.name)
    if weights is not None and is_host_array(weights):
        kwargs = dict(kwargs, weights=np.asarray(weights, dtype="float32"))
    return inputs, kwargs
