"""A decayed count-min sketch of raw int64 ids (numpy, host side).

Ids not yet admitted to a `DynamicEmbedding` are counted here in a fixed
number of bytes, whatever the number of distinct ids: `depth` rows of
`width` float32 counters; an id adds to one counter per row (a seeded
multiply-xorshift hash of its 64 bits) and its estimate is the smallest of
its counters, which never undercounts (Cormode and Muthukrishnan, 2005).
Counters are float32 so they can decay: multiplied by `decay` each step, a
count seen long ago fades like the admitted ids' counts do.
"""

import numpy as np

from keras_mixed_dim.checks import check_positive_int

COUNTER_BYTES = 4
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_GOLDEN_INT = 0x9E3779B97F4A7C15
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
# `_flat_columns`' rounds as numpy scalars made once
_ROUNDS = ((np.uint64(30), _M1), (np.uint64(27), _M2))
_LAST_SHIFT = np.uint64(31)


def mix64(keys, seed):
    """A 64-bit mix (splitmix64's finaliser) of int64 `keys`, seeded; uint64."""
    x = np.ascontiguousarray(np.asarray(keys).astype(np.int64)).view(np.uint64)
    with np.errstate(over="ignore"):
        x = x + _GOLDEN * np.uint64((int(seed) & 0xFFFFFFFF) + 1)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class CountMinSketch:
    """Decayed count-min sketch of int64 keys.

    Args:
        width: Counters per row (>= 1).
        depth: Rows (independent hashes, >= 1).
        seed: Seed of the hashes.

    Example:

    >>> sketch = CountMinSketch(1024)
    >>> _ = sketch.add(np.array([5, 5, 9]), np.array([1, 1, 1]))
    >>> sketch.estimate(np.array([5]))
    array([2.], dtype=float32)
    """

    def __init__(self, width, depth=2, seed=0):
        for name, value in (("width", width), ("depth", depth)):
            check_positive_int(f"sketch_{name}", value)
        self.width = int(width)
        self.depth = int(depth)
        self.seed = int(seed)
        self.counters = np.zeros((self.depth, self.width), np.float32)

    def _flat_columns(self, keys):
        """`(depth, n)` indices into `counters.ravel()`: row `r` holds
        `mix64(keys, seed * 131 + r) % width + r * width`, all rows hashed
        by one pass of array operations (the per-row seeds enter only as
        the added constant)."""
        # no copy: the first sum below makes the array hashed in place; no
        # `np.errstate` either: array arithmetic wraps without a warning
        x = np.asarray(keys, np.int64).view(np.uint64)
        constants = self._row_constants()
        x = x[None, :] + constants[0]
        shifted = np.empty_like(x)
        for shift, multiplier in _ROUNDS:
            np.right_shift(x, shift, out=shifted)
            np.bitwise_xor(x, shifted, out=x)
            np.multiply(x, multiplier, out=x)
        np.right_shift(x, _LAST_SHIFT, out=shifted)
        np.bitwise_xor(x, shifted, out=x)
        if self.width & (self.width - 1):
            np.remainder(x, np.uint64(self.width), out=x)
        else:
            # a power of two (the default 1024): the same as the remainder,
            # measured 5x cheaper than uint64 division
            np.bitwise_and(x, np.uint64(self.width - 1), out=x)
        columns = x.view(np.int64)   # below `width`: the same values
        columns += constants[1]
        return columns

    def _row_constants(self):
        """`(depth, 1)` uint64 seed constants of the rows' hashes and int64
        offsets of the rows in `counters.ravel()`, made once."""
        key = (self.seed, self.depth, self.width)
        cached = getattr(self, "_constants", None)
        if cached is None or cached[0] != key:
            seeds = np.array([_GOLDEN_INT * (((self.seed * 131 + r) & 0xFFFFFFFF) + 1)
                              & 0xFFFFFFFFFFFFFFFF for r in range(self.depth)], np.uint64)
            rows = np.arange(self.depth, dtype=np.int64) * self.width
            cached = self._constants = (key, seeds[:, None], rows[:, None])
        return cached[1:]

    def add(self, keys, counts):
        """Adds `counts` to unique `keys` and returns their new estimates."""
        columns = self._flat_columns(keys)
        counters = self.counters.reshape(-1)   # a view: added to in place
        # rows end to end in one call: each counter still gets its additions
        # in key order, so the float32 sums are those of a row at a time
        values = np.empty(columns.shape, np.float32)
        values[...] = counts
        np.add.at(counters, columns.reshape(-1), values.reshape(-1))
        return counters[columns].min(axis=0)

    def estimate(self, keys):
        """Estimated (decayed) counts of int64 `keys`, without adding to
        them: the least of each key's counters, float32."""
        return self.counters.reshape(-1)[self._flat_columns(keys)].min(axis=0)

    def decay(self, factor):
        """Multiplies every counter by `factor` (in (0, 1])."""
        if factor != 1.0:
            self.counters *= np.float32(factor)

    @property
    def bytes(self):
        """Bytes of the counters."""
        return self.counters.size * COUNTER_BYTES
