"""A preset DLRM at a byte budget: settings checked before anything is
allocated, embedding layers planned, bytes of every part, and the sizing
of hosts for each kind (docs/scale.md).

```python
config = get_preset("mlperf-dcnv2", scale=1000)
budget_bytes = check_settings(config, "table", "1/16")  # fails here, allocating nothing
embeddings = preset_embeddings(config, "table", budget_bytes)
model = preset_model(config, embeddings)
```
"""

import math
import re

import keras
import numpy as np

from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.budgets import BudgetTooSmall
from keras_mixed_dim.models.embeddings import make_embedding
from keras_mixed_dim.models.embeddings import smallest_md_params
from keras_mixed_dim.models.kinds import get_kind
from keras_mixed_dim.models.presets import parse_fraction

SCALE_KINDS = ("uniform", "table", "table_blocks", "md_qr", "robe", "lma")
# Kinds whose plan reads per-id counts (the sampling pass).
COUNTED_KINDS = ("table_blocks", "md_qr")


def scale_kind(kind):
    """`kind`'s name among `SCALE_KINDS` (`"block"`, deprecated, is
    `"table_blocks"`); errors name it."""
    name = get_kind(kind, "dlrm").name if kind == "block" else kind
    if name not in SCALE_KINDS:
        raise ValueError(f"Unknown embedding kind {kind!r}; known kinds: {SCALE_KINDS}.")
    return name
_PART_RULES = (
    ("projections", re.compile(r"projection")),
    ("tables", re.compile(r"(embeddings|quotient|remainder|memory)$")),
)


def smallest_bytes(config, kind, num_blocks=4):
    """Bytes of the smallest embedding plan of `kind` for `config`, from the
    cardinalities alone (no per-id work). Exact for every kind but
    `"md_qr"`, where it is a lower bound (every block one column wide and
    its `1 x dim` projection; the exact smallest plan ranks every id), and
    `preset_embeddings` checks the planned bytes again before building."""
    dim, rows = config.dim, config.cardinalities
    kind = scale_kind(kind)
    if kind == "uniform":
        return config.uniform_table_bytes
    if kind == "table":
        # every table one column wide, plus its 1 x dim projection
        return FLOAT_BYTES * sum(r + (dim if dim > 1 else 0) for r in rows)
    if kind == "table_blocks":
        # a lower bound: blocks only in tables of block_min_rows and more
        return FLOAT_BYTES * sum(smallest_md_params(r, dim, num_blocks) for r in rows)
    if kind == "md_qr":
        return FLOAT_BYTES * sum(min(num_blocks, r) * dim for r in rows)
    if kind in ("robe", "lma"):
        # hash constants and signatures, plus one float of memory
        return FLOAT_BYTES + sum(
            _auxiliary_bytes(kind, r, dim) for r in rows)


def _auxiliary_bytes(kind, rows, dim):
    try:
        make_embedding(kind, rows, dim, budget_bytes=FLOAT_BYTES)
    except BudgetTooSmall as error:
        # its smallest layer: the constants and signatures and one float
        return error.minimum - FLOAT_BYTES
    raise AssertionError(f"a {kind!r} layer fit in {FLOAT_BYTES} bytes")


def check_settings(config, kind, budget_fraction):
    """Checks an embedding kind and budget against `config` before anything
    is allocated; returns the budget in bytes.

    Args:
        config: A `DLRMConfig`.
        kind: One of `SCALE_KINDS`.
        budget_fraction: A fraction of the uniform tables' bytes (`"1/16"`,
            0.0625); must be 1 for `"uniform"`.

    Raises:
        ValueError: naming the kind or budget, when the kind is unknown or
            the budget is below the kind's smallest plan.
    """
    kind = scale_kind(kind)
    fraction = parse_fraction(budget_fraction)
    if kind == "uniform" and fraction != 1:
        raise ValueError(f"--embedding uniform stores every table whole; its budget "
                         f"fraction is 1, not {budget_fraction!r}.")
    budget_bytes = fraction * config.uniform_table_bytes
    smallest = smallest_bytes(config, kind)
    if budget_bytes < smallest:
        raise ValueError(
            f"budget_fraction={budget_fraction!r} ({budget_bytes / 2**30:.3f} GiB) "
            f"is below the "
            f"smallest {kind!r} plan of preset {config.name!r} at scale "
            f"{config.scale:g} ({smallest / 2**30:.3f} GiB, "
            f"{smallest / config.uniform_table_bytes:.2g} of the uniform tables).")
    return budget_bytes


def preset_embeddings(config, kind, budget_bytes, counts=None, seed=0):
    """The per-feature embedding layers (unbuilt: nothing allocated), every
    array of them within `budget_bytes` (but `"uniform"`'s).

    `counts` (per feature, in rank order: id 0 the most frequent) place the
    frequency blocks of `"table_blocks"` and `"md_qr"`; ids are taken as
    ranks, so no id remap is stored."""
    from keras_mixed_dim.models.dlrm import embedding_layers

    kind = scale_kind(kind)
    try:
        return embedding_layers(config.cardinalities, config.dim, kind, counts=counts,
                                budget_bytes=None if kind == "uniform" else budget_bytes,
                                seed=seed, bag_sizes=config.bag_sizes)
    except BudgetTooSmall as error:
        raise ValueError(
            f"The smallest {kind!r} plan of preset {config.name!r} takes "
            f"{error.minimum / 2**30:.3f} GiB, above the budget of "
            f"{budget_bytes / 2**30:.3f} GiB ({budget_bytes:,.0f} bytes).") from None


def preset_model(config, embeddings, **kwargs):
    """`dlrm()` of `config` on `embeddings` (stacked where they allow it)."""
    from keras_mixed_dim.models.dlrm import dlrm

    return dlrm(embeddings, **config.model_kwargs(), **kwargs)


@keras.saving.register_keras_serializable(package="keras_mixed_dim")
class HostUniform(keras.initializers.Initializer):
    """Keras's `"uniform"` range drawn by numpy in place, for tables of
    gigabytes: Keras's random initializers hold about twice a table while
    they draw it and keep the peak; this one holds the float32 array and
    its one copy into the variable, and the array is freed after.

    Args:
        minval, maxval: The range (Keras's `"uniform"`: -0.05, 0.05).
        seed: Seed of numpy's generator (each call draws anew from it).
    """

    def __init__(self, minval=-0.05, maxval=0.05, seed=0):
        self.minval, self.maxval, self.seed = float(minval), float(maxval), int(seed)
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, shape, dtype=None):
        values = np.empty(shape, np.float32)
        flat = values.reshape(-1)
        step = 1 << 24
        for start in range(0, flat.size, step):
            chunk = flat[start:start + step]
            self._rng.random(out=chunk, dtype=np.float32)
            chunk *= self.maxval - self.minval
            chunk += self.minval
        return values

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


def host_initialized(embeddings, seed=0):
    """Gives the per-feature layers' tables a `HostUniform` initializer
    (a stacked layer built from them takes it)."""
    for layer in embeddings:
        if hasattr(layer, "embeddings_initializer"):
            layer.embeddings_initializer = HostUniform(seed=seed)
    return embeddings


def part_bytes(model, optimizer=None):
    """Bytes of every part: `tables`, `projections`, `remaps` (id remaps,
    counts, signatures, hash constants), `dense` (MLPs, cross layers), and
    the optimizer's slots split into `table_slots` and `dense_slots`."""
    parts = dict.fromkeys(("tables", "projections", "remaps", "dense",
                           "table_slots", "dense_slots"), 0)
    embedding_paths = set()
    for layer in model._flatten_layers(include_self=False):
        if hasattr(layer, "output_dim") and (hasattr(layer, "input_dim")
                                             or hasattr(layer, "input_dims")
                                             or hasattr(layer, "memory_size")):
            embedding_paths.update(v.path for v in layer.weights)
        if type(layer).__name__ == "SharedMemory":
            embedding_paths.update(v.path for v in layer.weights)
    seen = set()
    for variable in model.weights:
        if variable.path in seen:
            continue
        seen.add(variable.path)
        size = _nbytes(variable)
        if variable.path not in embedding_paths:
            parts["dense"] += size
            continue
        name = variable.path.rsplit("/", 1)[-1]
        for part, rule in _PART_RULES:
            if rule.search(name):
                parts[part] += size
                break
        else:
            parts["remaps"] += size
    if optimizer is not None:
        for variable in optimizer.variables:
            if len(variable.shape) == 0:
                continue
            slot = "table_slots" if re.search(
                r"(_embeddings_|_memory_|row_accumulator|quotient|remainder)",
                variable.path) else "dense_slots"
            parts[slot] += _nbytes(variable)
    parts["total"] = int(sum(parts.values()))
    return parts


def _nbytes(variable):
    return int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize


HOST_SIZES_GIB = (24, 64, 256)
SIZING_KINDS = ("uniform", "table", "md_qr", "robe", "lma")
SIZING_BUDGETS = ("1/4", "1/16", "1/64")


def training_bytes(config, kind, budget_fraction, dense_slots=1):
    """Bytes training holds for `kind` at `budget_fraction` with
    Adagrad (MLPerf's optimizer): the embedding budget; row-wise Adagrad's
    one float per table row (at most one per id; ROBE / LMA's 1-D pool is
    updated by the dense optimizer, one float per float); the dense part
    with `dense_slots` slots per parameter."""
    fraction = 1.0 if kind == "uniform" else parse_fraction(budget_fraction)
    embedding = fraction * config.uniform_table_bytes
    if kind in ("robe", "lma"):
        slots = embedding
    else:
        slots = FLOAT_BYTES * config.total_rows
    return int(embedding + slots
               + (1 + dense_slots) * FLOAT_BYTES * dense_parameters(config))


def dense_parameters(config):
    """Parameters of the MLPs and cross layers of `config` (no tables)."""
    params = 0
    width = config.num_dense
    for units in (*config.bottom, config.dim):
        params += width * units + units
        width = units
    features = config.num_features + 1
    if config.interaction == "dcnv2":
        width = features * config.dim
        params += config.cross_layers * (2 * width * config.cross_rank + width)
    else:
        width = config.dim + features * (features - 1) // 2
    for units in (*config.top, 1):
        params += width * units + units
        width = units
    return params


# Peak resident bytes over the bytes training holds, measured by
# examples/dlrm_scale.py at 1/4 of mlperf-dcnv2 (table at 1/16: 1.70 GiB
# held, 3.68 GiB at the checkpoint's save = 0.69 GiB of runtime + 1.76x).
PEAK_FACTOR = 1.8


def hosts_needed(config, kind, budget_fraction, host_gib, peak_factor=PEAK_FACTOR,
                 reserve_gib=3.0):
    """Hosts of `host_gib` needed to train `kind` at `budget_fraction`, tables
    sharded by rows and the dense part replicated, when a host's peak is
    `peak_factor` times what it holds (save, load and export copies) plus
    `reserve_gib` (runtime, batch, activations). None when the dense part
    alone does not fit."""
    total = training_bytes(config, kind, budget_fraction)
    dense = 2 * FLOAT_BYTES * dense_parameters(config)
    room = (host_gib - reserve_gib) * 2**30 - peak_factor * dense
    if room <= 0:
        return None
    return max(1, math.ceil(peak_factor * (total - dense) / room))


def sizing_table(config, hosts=HOST_SIZES_GIB, kinds=SIZING_KINDS,
                 budgets=SIZING_BUDGETS):
    """Rows `(kind, budget, training GiB, hosts of each size)` for the docs."""
    rows = [("uniform", "1", training_bytes(config, "uniform", 1) / 2**30,
             [hosts_needed(config, "uniform", 1, h) for h in hosts])]
    for kind in kinds:
        if kind == "uniform":
            continue
        for budget in budgets:
            rows.append((kind, budget, training_bytes(config, kind, budget) / 2**30,
                         [hosts_needed(config, kind, budget, h) for h in hosts]))
    return rows
