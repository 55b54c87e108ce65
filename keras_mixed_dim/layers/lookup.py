"""`IdLookupLayer`: the id rule, combiners and masking shared by the
compressed embedding layers (`QREmbedding`, `HashingEmbedding`,
`HashedMemoryEmbedding`).

A subclass builds its weights and implements `lookup(ids)`, which receives
int32 ids that are all in `[0, input_dim)` (invalid ones were replaced by 0)
and returns float32 vectors `ids.shape + (output_dim,)`. This class zeroes
the vectors of invalid ids (and of padding in a bag) with a select, so they
get no gradient, applies the combiner and casts to the compute dtype.
"""

import numpy as np
from keras import layers
from keras import ops

from keras_mixed_dim.layers.ids import check_bag_rank
from keras_mixed_dim.layers.ids import is_host_array
from keras_mixed_dim.layers.ids import sanitize_numpy_ids
from keras_mixed_dim.layers.ids import valid_int_ids

COMBINERS = (None, "sum", "mean")


def check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or (
        value <= 0
    ):
        raise ValueError(
            f"`{name}` must be a positive integer. Received: "
            f"{name}={value!r} (of type {type(value).__name__})."
        )
    return int(value)


class IdLookupLayer(layers.Layer):
    """Base of the compressed embedding layers (not used on its own).

    Args:
        input_dim: Number of ids.
        output_dim: Width of every output vector.
        combiner: None, `"sum"` or `"mean"` (reduce the last id axis).
        mask_zero: Whether id 0 is padding.
        **kwargs: Base layer keyword arguments.
    """

    def __init__(self, input_dim, output_dim, combiner=None, mask_zero=False,
                 **kwargs):
        input_dim = check_positive_int("input_dim", input_dim)
        output_dim = check_positive_int("output_dim", output_dim)
        if combiner not in COMBINERS:
            raise ValueError(
                f"`combiner` must be one of {COMBINERS}. Received: {combiner!r}"
            )
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.combiner = combiner
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero and combiner is None
        # Tables stay float32 under mixed precision; only outputs are cast.
        self.autocast = False

    def __call__(self, inputs, *args, **kwargs):
        if is_host_array(inputs):
            # Before Keras converts them: int64 ids >= 2**31 would wrap onto
            # valid ids on JAX without x64, and NaN would cast to id 0.
            inputs = sanitize_numpy_ids(inputs, self.input_dim, self.name)
        return super().__call__(inputs, *args, **kwargs)

    def ids_and_valid(self, inputs):
        """`(safe_ids, valid)`: int32 ids with every invalid one set to 0."""
        ids, valid = valid_int_ids(inputs, self.input_dim, self.name)
        if self.mask_zero and self.combiner is not None:
            valid = ops.logical_and(valid, ops.not_equal(ids, 0))
        safe = ops.cast(ops.where(valid, ids, ops.zeros_like(ids)), "int32")
        return safe, valid

    def call(self, inputs):
        return self.lookup_and_combine(inputs, self.lookup)

    def lookup_and_combine(self, inputs, lookup):
        """Applies the id rule, `lookup` on the safe ids, and the combiner."""
        check_bag_rank(inputs.shape, self.combiner, self.name)
        ids, valid = self.ids_and_valid(inputs)
        outputs = lookup(ids)
        outputs = ops.where(ops.expand_dims(valid, -1), outputs,
                            ops.zeros_like(outputs))
        if self.combiner is not None:
            outputs = ops.sum(outputs, axis=-2)
            if self.combiner == "mean":
                count = ops.sum(ops.cast(valid, outputs.dtype), axis=-1,
                                keepdims=True)
                outputs = ops.divide(outputs, ops.maximum(count, 1.0))
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
        })
        return config
