"""Byte budgets and byte counts: one vocabulary for every layer and builder.

A budget is given either as `budget_bytes` (every array the layer holds:
tables, projections, id remaps, hash constants, signatures, frequency
counts) or, where a fraction is natural, as `budget_fraction` of the
uniform float32 table of the same vocabulary and output width. Passing both
is an error. `embedding_bytes(model)` counts what a model's embedding layers
hold, a shared memory once.

This module imports nothing from the rest of the package at import time, so
the planner (numpy only) and the layers can both use it.
"""

import math
import warnings

import numpy as np

# Every table is float32 (also under mixed precision: only outputs are cast).
FLOAT_BYTES = 4
# The id -> rank table and the frequency counts are one int32 (or float32
# when counts decay) per id.
REMAP_BYTES = 4
COUNT_BYTES = 4


class BudgetTooSmall(ValueError):
    """A budget below the smallest plan a layer or builder can make.

    Attributes:
        name: The argument that carried the budget (`"budget_bytes"`, ...).
        value: The budget as given.
        minimum: The smallest value of that argument that has a plan.
    """

    def __init__(self, name, value, minimum, minimum_text=None, detail=""):
        self.name, self.value, self.minimum = name, value, minimum
        self.detail = detail
        if minimum_text is None:
            minimum_text = f"{minimum:,.0f} bytes"
        super().__init__(
            f"`{name}`={value!r} is below the smallest possible plan, which needs "
            f"{name}={minimum!r} ({minimum_text}).")


class Budget:
    """A budget as given (argument name and value) and what it allows.

    `unit_of(bytes)` turns bytes into the argument's unit, for errors that
    name the smallest value of the argument itself.
    """

    def __init__(self, name, value, total_bytes, uniform=None):
        self.name, self.value, self.bytes = name, value, total_bytes
        self.uniform = uniform

    def too_small(self, minimum_bytes, detail=""):
        """The `BudgetTooSmall` of a plan that needs `minimum_bytes`."""
        if self.name == "budget_fraction":
            minimum = math.ceil(minimum_bytes / self.uniform * 1e6) / 1e6
            return BudgetTooSmall(self.name, self.value, minimum,
                                  f"{minimum_bytes:,.0f} bytes"
                                  + (f"; {detail}" if detail else ""), detail)
        return BudgetTooSmall(self.name, self.value, math.ceil(minimum_bytes),
                              detail or "bytes", detail)


def budget_of(budget_bytes=None, budget_fraction=None, uniform=None):
    """`resolve_budget` as a `Budget` that remembers how it was given (None
    when neither is given)."""
    total = resolve_budget(budget_bytes, budget_fraction, uniform)
    if total is None:
        return None
    if budget_bytes is not None:
        return Budget("budget_bytes", budget_bytes, total, uniform)
    return Budget("budget_fraction", budget_fraction, total, uniform)


def check_budget_bytes(value, name="budget_bytes"):
    """`value` as a positive finite float of bytes; errors name it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)) or not (
            math.isfinite(float(value)) and value > 0):
        raise ValueError(f"`{name}` must be a positive number of bytes. "
                         f"Received: {name}={value!r}")
    return float(value)


def check_budget_fraction(value, name="budget_fraction"):
    """`value` as a fraction in (0, 1]; errors name it. Strings such as
    `"1/16"` or `"0.0625"` are read too (command-line flags)."""
    given = value
    if isinstance(value, str):
        try:
            if "/" in value:
                num, den = value.split("/")
                value = float(num) / float(den)
            else:
                value = float(value)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"`{name}` must be a fraction such as 1/16 or 0.0625. "
                             f"Received: {given!r}") from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)) or not (
            math.isfinite(float(value)) and 0 < value <= 1):
        raise ValueError(f"`{name}` must be a fraction in (0, 1] of the uniform "
                         f"float32 table's bytes. Received: {name}={given!r}")
    return float(value)


def check_legacy_budget(value, name="budget"):
    """The deprecated fraction-or-bytes `budget` of the converters (a
    fraction < 1 of the original bytes, or bytes >= 1) as a positive finite
    float; errors name it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)) or not (
            math.isfinite(float(value)) and value > 0):
        raise ValueError(f"`{name}` must be a fraction in (0, 1) of the original "
                         f"bytes or a number of bytes >= 1. Received: {name}={value!r}")
    return float(value)


def resolve_budget(budget_bytes=None, budget_fraction=None, uniform_bytes=None):
    """The budget in bytes from at most one of `budget_bytes` and
    `budget_fraction` (a fraction of `uniform_bytes`); None when neither.

    Raises:
        ValueError: naming both when both are given, or the bad value.
    """
    if budget_bytes is not None and budget_fraction is not None:
        raise ValueError(
            "Pass at most one of `budget_bytes` and `budget_fraction`. Received: "
            f"budget_bytes={budget_bytes!r}, budget_fraction={budget_fraction!r}")
    if budget_bytes is not None:
        return check_budget_bytes(budget_bytes)
    if budget_fraction is not None:
        return check_budget_fraction(budget_fraction) * float(uniform_bytes)
    return None


def uniform_bytes(input_dim, output_dim):
    """Bytes of the uniform float32 `input_dim x output_dim` table."""
    return FLOAT_BYTES * int(input_dim) * int(output_dim)


def warn_budget_deprecated(where, meaning, instead, stacklevel=3):
    """The `DeprecationWarning` of the old `budget=` argument of `where`,
    saying what it meant there and what to pass instead."""
    warnings.warn(
        f"`{where}(budget=...)` is deprecated and will be removed in 0.4.0: "
        f"here it meant {meaning}. Pass {instead} instead.",
        DeprecationWarning, stacklevel=stacklevel)


def refuse_budget_with_new(budget, budget_bytes, budget_fraction):
    """Refuses the deprecated `budget` given together with `budget_bytes` or
    `budget_fraction` (which of them would win is not obvious), naming all
    three values."""
    if budget is not None and (budget_bytes is not None or budget_fraction is not None):
        raise ValueError(
            "Pass one of `budget_bytes`, `budget_fraction` and the deprecated "
            f"`budget`. Received: budget_bytes={budget_bytes!r}, "
            f"budget_fraction={budget_fraction!r}, budget={budget!r}")


def embedding_bytes(model_or_layers):
    """Bytes held by the embedding layers of a model, a shared memory once.

    Every layer of this package reports its `bytes` (tables, projections,
    id remaps, hash constants, signatures, frequency counts); a
    `keras.layers.Embedding` counts its float32 table. Layers that are not
    embeddings (dense layers, the interaction) are not counted. Unbuilt
    layers are counted from their plans, so a model can be sized before
    anything is allocated.

    Example:

    >>> layer = keras_mixed_dim.MixedDimEmbedding(1000, 16, budget_fraction=0.25)
    >>> keras_mixed_dim.embedding_bytes([layer]) <= 0.25 * 1000 * 16 * 4
    True

    Args:
        model_or_layers: A `keras.Model` (its layers, nested ones included),
            one layer, or a list of layers.

    Returns:
        An int: the bytes.
    """
    import keras

    if isinstance(model_or_layers, keras.Model):
        layers = _embedding_layers_of(model_or_layers)
    elif isinstance(model_or_layers, (list, tuple)):
        layers = list(model_or_layers)
    else:
        layers = [model_or_layers]
    total, pools = 0, {}
    for layer in layers:
        memory = getattr(layer, "memory_size", None)
        if _is_pool(layer):
            # a `SharedMemory` pool itself: keyed as its readers key it
            pools[id(layer)] = memory * FLOAT_BYTES
        elif memory is not None and getattr(layer, "shared_memory", False):
            pool = _pool_of(layer)
            pools[id(pool) if pool is not None else layer.name] = memory * FLOAT_BYTES
            total += layer.auxiliary_bytes
        elif _has_bytes(layer):
            total += int(layer.bytes)
        elif isinstance(layer, keras.layers.Embedding):
            total += FLOAT_BYTES * layer.input_dim * layer.output_dim
        else:
            total += sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
                         for w in layer.weights)
    return int(total + sum(pools.values()))


def _is_pool(layer):
    return getattr(layer, "memory_size", None) is not None and not hasattr(
        layer, "input_dim")


def _pool_of(reader):
    """The `SharedMemory` a reader reads: the one it was given, or, in a
    loaded model (where the pool reaches the reader as its `memory`
    argument, not as an attribute), the one whose output it is called on."""
    pool = getattr(reader, "_memory_layer", None)
    if pool is not None:
        return pool
    for node in getattr(reader, "_inbound_nodes", None) or []:
        for tensor in node.arguments.keras_tensors:
            source = tensor._keras_history.operation
            if _is_pool(source):
                return source
    return None


def _has_bytes(layer):
    # `bytes` of a layer is a property; the builtin type is no answer
    return not isinstance(layer, type) and isinstance(
        getattr(type(layer), "bytes", None), property)


def _embedding_layers_of(model):
    """The embedding layers of `model`: `keras.layers.Embedding` and every
    layer of this package that reports `bytes`, nested ones included (a
    layer holding others is searched, not counted, unless it reports bytes
    itself)."""
    import keras

    found = []

    def visit(layer):
        if isinstance(layer, keras.layers.Embedding) or _has_bytes(layer):
            found.append(layer)
            return
        for child in getattr(layer, "layers", None) or []:
            visit(child)
        # layers holding layers in attributes (a tower holding its tables)
        for child in layer._flatten_layers(include_self=False, recursive=False) \
                if hasattr(layer, "_flatten_layers") else []:
            if child not in found and not isinstance(child, keras.Model):
                visit(child)

    for layer in model.layers:
        visit(layer)
    # one layer reached twice (through `layers` and attributes) counts once
    unique, seen = [], set()
    for layer in found:
        if id(layer) not in seen:
            seen.add(id(layer))
            unique.append(layer)
    return unique
