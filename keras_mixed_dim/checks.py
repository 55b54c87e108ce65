"""Argument checks shared across the package (numpy only; imports nothing of
the package, so any module may use them)."""

import numpy as np


def check_positive_int(name, value, allow_none=False):
    """`value` as an int if it is a positive integer, else a `ValueError`.

    Python and numpy integers pass; bools, floats (even whole ones, as
    `keras.layers.Dense(units)` refuses them), strings and other values do
    not.

    Args:
        name: The argument's name, for the message.
        value: The value to check.
        allow_none: Whether None is accepted (and returned).

    Returns:
        `int(value)`, or None for None when `allow_none`.

    Raises:
        ValueError: naming `name`, the value and its type.

    Example:

    >>> check_positive_int("output_dim", np.int64(16))
    16
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: "
            f"{name}={value!r} (of type {type(value).__name__})."
        )
    return int(value)
