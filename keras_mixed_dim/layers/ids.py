"""Id handling shared by every embedding-like layer of the package.

One rule on every backend: an id is valid when it is an integer in
`[0, input_dim)`. Anything else (negative, too large, a float that is not a
whole number, NaN, infinity) is "out of range": the layer gives it an
all-zero vector and no gradient. Strings, booleans and complex numbers are
not ids at all and raise a `TypeError` that names the dtype.

Two places can corrupt an id before a layer sees it, and both are handled
here: numpy ids wider than int32 (JAX without x64 truncates int64 to int32,
so `2**32 + 5` would become `5`), and float ids cast to int (NaN casts to
`0` on JAX). `sanitize_numpy_ids` maps such values to -1 on the host, and
`valid_int_ids` does the same in-graph for backend tensors.
"""

import numpy as np
from keras import backend
from keras import ops

INT32_MAX = np.iinfo(np.int32).max

# Ids a layer accepts as tensors; float ids are allowed because
# `keras.Input` defaults to float32, as `keras.layers.Embedding` allows them.
_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
               "uint64")
_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def check_id_dtype(dtype, layer_name=None):
    """Raises a `TypeError` for dtypes that cannot hold ids (strings, bools)."""
    name = backend.standardize_dtype(dtype) if not isinstance(dtype, np.dtype) else (
        dtype.name)
    if name in _INT_DTYPES or name in _FLOAT_DTYPES:
        return name
    where = f"Layer {layer_name!r}" if layer_name else "An embedding layer"
    raise TypeError(
        f"{where} takes integer ids (or whole-number floats); received dtype "
        f"{name!r}. Map raw values such as strings to integer ids first (for "
        "example with a vocabulary lookup)."
    )


def sanitize_numpy_ids(ids, input_dim, layer_name=None):
    """Host-side ids as int32 with every invalid id replaced by -1.

    Args:
        ids: A numpy array (or anything `np.asarray` takes) of ids.
        input_dim: Number of valid ids.
        layer_name: For the error message.

    Returns:
        An int32 numpy array of the same shape; ids outside `[0, input_dim)`
        and floats that are not whole numbers become -1, so no backend cast
        can wrap them onto a valid id.

    Raises:
        TypeError: `ids` are strings, booleans or another non-numeric dtype.
    """
    array = np.asarray(ids)
    if array.dtype.kind not in "iuf":
        check_id_dtype(array.dtype, layer_name)
    if array.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(array) & (array == np.floor(array))
            valid &= (array >= 0) & (array < input_dim)
        return np.where(valid, array, -1).astype(np.int32)
    valid = (array >= 0) & (array < input_dim)
    return np.where(valid, array, -1).astype(np.int32)


def is_host_array(value):
    """Whether `value` is a numpy array or a Python list/scalar of numbers."""
    return isinstance(value, (np.ndarray, np.generic, list, tuple, int, float))


def valid_int_ids(ids, input_dim, layer_name=None):
    """In-graph: `(int_ids, valid)` for a tensor of ids of any numeric dtype.

    Float ids are valid only when finite, whole and in range; they are
    compared as floats before any cast, so a NaN or a huge float never
    becomes a valid integer. `int_ids` holds -1 wherever `valid` is False.
    """
    ids = ops.convert_to_tensor(ids)
    dtype = check_id_dtype(ids.dtype, layer_name)
    if dtype in _FLOAT_DTYPES:
        valid = ops.logical_and(
            ops.equal(ids, ops.floor(ids)),
            ops.logical_and(ops.greater_equal(ids, 0), ops.less(ids, input_dim)),
        )
        int_ids = ops.cast(ops.where(valid, ids, -1), "int32")
        return int_ids, valid
    if dtype not in ("int32", "int64"):
        # unsigned ids are never negative; casting through int64 keeps
        # uint32 ids above 2**31 out of range instead of negative
        ids = ops.cast(ids, "int64" if dtype in ("uint32", "uint64") else "int32")
    valid = ops.logical_and(ops.greater_equal(ids, 0), ops.less(ids, input_dim))
    return ops.where(valid, ids, ops.cast(-1, ids.dtype)), valid


def check_bag_rank(shape, combiner, layer_name=None):
    """With a combiner the last axis is the bag: rank >= 2 is required."""
    if combiner is not None and len(shape) < 2:
        where = f"Layer {layer_name!r}" if layer_name else "The layer"
        raise ValueError(
            f"{where} has combiner={combiner!r}, which reduces the last id axis "
            f"(the bag axis), so the ids need rank >= 2, e.g. (batch, bag). Received "
            f"ids of shape {tuple(shape)}; for one id per example use "
            "shape (batch, 1)."
        )
