"""The one id rule (ids.py) on the current backend, against a numpy
statement of it: an id is valid when it is a whole number in [0, input_dim);
anything else maps to -1 (.ci/run runs tests/layers under every backend)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim.layers.ids import check_id_dtype
from keras_mixed_dim.layers.ids import sanitize_numpy_ids
from keras_mixed_dim.layers.ids import valid_int_ids

INPUT_DIM = 10


def expected(values):
    """The rule written out per value in Python."""
    out = []
    for v in np.asarray(values, dtype=object).ravel():
        v = float(v) if isinstance(v, (float, np.floating)) else int(v)
        whole = v == v and v not in (float("inf"), -float("inf")) and v == int(v)
        out.append(int(v) if whole and 0 <= v < INPUT_DIM else -1)
    return np.array(out).reshape(np.shape(values))


FLOATS = np.array([0.0, 9.0, 9.5, 10.0, -1.0, -0.5, np.nan, np.inf, -np.inf, 3.0, 1e10])
INTS = np.array([0, 9, 10, -1, 3, 2**31 - 1, -(2**31)])


@pytest.mark.parametrize("values", [FLOATS, INTS, np.array([0, 9, 10, 2**32 + 5, -2**40]),
                                    np.array([0, 9, 10, 2**33], np.uint64)],
                         ids=["float", "int", "int64_wide", "uint64"])
def test_host_ids_follow_the_rule_and_never_wrap(values):
    got = sanitize_numpy_ids(values, INPUT_DIM)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected(values))


@pytest.mark.parametrize("dtype,values", [
    ("float32", FLOATS), ("int32", INTS), ("int64", INTS),
    ("uint8", np.array([0, 9, 10, 255])), ("uint32", np.array([0, 9, 2**31 + 3, 2**32 - 1])),
    ("uint64", np.array([0, 9, 10, 2**32 + 5, 2**63 + 1], np.uint64)),
])
def test_in_graph_ids_follow_the_rule(dtype, values):
    if dtype == "uint64" and keras.backend.backend() != "tensorflow":
        # JAX without x64 truncates uint64 itself; PyTorch has no uint64 tensors
        pytest.skip(f"no uint64 tensors on {keras.backend.backend()}")
    if dtype == "int64" and keras.backend.backend() == "jax":
        values = values[np.abs(values) < 2**31]  # JAX without x64 holds int32
    tensor = ops.convert_to_tensor(values.astype(dtype))
    int_ids, valid = valid_int_ids(tensor, INPUT_DIM)
    np.testing.assert_array_equal(ops.convert_to_numpy(int_ids), expected(values))
    np.testing.assert_array_equal(ops.convert_to_numpy(valid), expected(values) >= 0)


def test_strings_and_booleans_are_refused_naming_the_dtype_and_layer():
    with pytest.raises(TypeError, match="'items'.*dtype 'bool'"):
        check_id_dtype("bool", "items")
    with pytest.raises(TypeError, match="<U1|str"):
        sanitize_numpy_ids(np.array(["a", "b"]), INPUT_DIM)
    assert check_id_dtype(np.dtype("int16")) == "int16"
