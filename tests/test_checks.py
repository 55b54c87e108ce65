"""`keras_mixed_dim.checks.check_positive_int`, the package's one
positive-integer check (against Python's own notion of an integer)."""

import numpy as np
import pytest

from keras_mixed_dim.checks import check_positive_int


@pytest.mark.parametrize("value", [1, 7, np.int32(3), np.uint64(2**40), 2**63])
def test_positive_integers_pass_as_python_ints(value):
    result = check_positive_int("n", value)
    assert type(result) is int and result == int(value)


@pytest.mark.parametrize("value", [0, -1, np.int64(0), True, False, 2.0, np.float32(3),
                                   "4", None, [1]])
def test_anything_else_is_refused_with_name_and_value(value):
    with pytest.raises(ValueError, match=r"`width` must be a positive integer\. "
                                         r"Received: width=") as info:
        check_positive_int("width", value)
    assert repr(value) in str(info.value) and type(value).__name__ in str(info.value)


def test_none_passes_only_when_allowed():
    assert check_positive_int("n", None, allow_none=True) is None
    assert check_positive_int("n", 5, allow_none=True) == 5
