"""Synthetic Criteo-like rows with the real Kaggle cardinalities (numpy only).

Each categorical feature draws ids with Zipf popularity (id 0 most frequent,
so ids are already ranked); the click probability depends on a hidden value
per id of several features (and on pairs of them), so a model can only
predict well by learning the ids' embeddings. Hidden values come from an
integer hash of (feature, id), so nothing of size `cardinality` is stored and
10**7 rows stream in chunks.
"""

import os
import pathlib

import numpy as np

from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES
from keras_mixed_dim.datasets.criteo.format import NUM_DENSE

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)

# Ids per sample of each of the 26 features in MLPerf's DLRM-DCNv2
# benchmark (Criteo 1TB multi-hot).
MLPERF_MULTI_HOT_SIZES = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12,
                          100, 27, 10, 3, 1, 1)


def hidden_value(feature, ids, salt=0):
    """A fixed pseudo-random value in [-sqrt(3), sqrt(3)] per (feature, id):
    unit variance, the same on every call (splitmix64 of the pair)."""
    with np.errstate(over="ignore"):
        x = np.asarray(ids, dtype=np.uint64) + np.uint64(
            (feature * 1_000_003 + salt * 7_919 + 1) << 32
        )
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        x = x ^ (x >> np.uint64(31))
    unit = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return (2.0 * unit - 1.0) * np.sqrt(3.0)


def hex_code(feature, ids):
    """A 32-bit code per (feature, id), written as Criteo's 8 hex characters."""
    unit = (hidden_value(feature, ids, salt=99) / np.sqrt(3.0) + 1.0) / 2.0
    return np.minimum(unit * 2.0**32, 2.0**32 - 1).astype(np.uint64)


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def distinct_hex_codes(feature, ids):
    """8 lowercase hex characters per (feature, id), distinct for distinct
    ids below 2**32: a bijective 32-bit mix, unlike `hex_code`, whose rare
    collisions a vocabulary would merge. Returns an `S8` array."""
    with np.errstate(over="ignore"):
        x = (np.asarray(ids, dtype=np.uint64) + np.uint64(feature * 0x9E3779B9)) \
            & np.uint64(0xFFFFFFFF)
        x = (x * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)  # odd: invertible
        x ^= x >> np.uint64(16)
        x = (x * np.uint64(0x297A2D39)) & np.uint64(0xFFFFFFFF)
        x ^= x >> np.uint64(16)
    shifts = np.arange(28, -4, -4, dtype=np.uint64)
    nibbles = (x[..., None] >> shifts) & np.uint64(0xF)
    return _HEX_DIGITS[nibbles.astype(np.intp)].view("S8").reshape(np.shape(ids))


def zipf_ranks(rng, cardinality, size, exponent):
    """Ranks in [0, cardinality) with P(r) ~ (r + 1)**-exponent (continuous
    inverse-CDF approximation, exact enough and O(size) memory)."""
    u = rng.random(size)
    if cardinality == 1:
        return np.zeros(size, dtype=np.int64)
    if abs(exponent - 1.0) < 1e-9:
        ranks = np.exp(u * np.log(cardinality + 1.0)) - 1.0
    else:
        a = 1.0 - exponent
        ranks = ((cardinality + 1.0) ** a - 1.0) * u + 1.0
        ranks = ranks ** (1.0 / a) - 1.0
    return np.clip(ranks.astype(np.int64), 0, cardinality - 1)


class SyntheticCriteo:
    """A stream of synthetic rows.

    Args:
        num_rows: Total rows (10**4 to 10**7 and beyond).
        cardinalities: Ids per categorical feature (default: Kaggle's 26).
        zipf_exponent: Popularity skew within each feature.
        signal_features: How many of the largest features carry signal.
        seed: Seed of the id draws and noise (hidden values never change).
        multi_hot_sizes: Optional ids per row for each feature (as MLPerf's
            multi-hot Criteo, e.g. `MLPERF_MULTI_HOT_SIZES`): feature `f`
            draws `multi_hot_sizes[f]` ids per row (with repeats, each from
            the feature's Zipf law), in consecutive columns of
            `categorical`, which then has `sum(multi_hot_sizes)` columns
            (the layout `dlrm(bag_sizes=...)` takes). A bag's signal is the
            mean of its ids' hidden values. Default: one id per feature
            (the rows are then those of earlier versions, draw for draw).

    Example:

    >>> data = SyntheticCriteo(10_000, cardinalities=[1000, 50, 7], seed=0)
    >>> model.fit(data.dataset(batch_size=512))             # doctest: +SKIP
    """

    def __init__(self, num_rows, cardinalities=KAGGLE_CARDINALITIES,
                 zipf_exponent=1.1, signal_features=8, seed=0, multi_hot_sizes=None):
        if int(num_rows) != num_rows or num_rows < 1:
            raise ValueError(f"`num_rows` must be an integer >= 1. Received: {num_rows!r}")
        cardinalities = tuple(int(c) for c in cardinalities)
        if not cardinalities or min(cardinalities) < 1:
            raise ValueError(
                f"`cardinalities` must be integers >= 1. Received: {cardinalities!r}"
            )
        self.num_rows = int(num_rows)
        self.cardinalities = cardinalities
        self.zipf_exponent = float(zipf_exponent)
        self.seed = seed
        if multi_hot_sizes is None:
            multi_hot_sizes = (1,) * len(cardinalities)
        if len(multi_hot_sizes) != len(cardinalities) or any(
                isinstance(k, bool) or int(k) != k or k < 1 for k in multi_hot_sizes):
            raise ValueError(
                f"`multi_hot_sizes` must be {len(cardinalities)} integers >= 1, one "
                f"per feature. Received: {multi_hot_sizes!r}")
        self.multi_hot_sizes = tuple(int(k) for k in multi_hot_sizes)
        order = np.argsort(cardinalities)[::-1]
        self.signal = tuple(int(f) for f in order[: min(signal_features, len(order))])

    def chunks(self, chunk_size=65_536):
        """Yields `(dense, categorical, labels)` numpy chunks in order."""
        rng = np.random.default_rng(self.seed)
        done = 0
        while done < self.num_rows:
            size = min(chunk_size, self.num_rows - done)
            yield self._chunk(rng, size)
            done += size

    def arrays(self):
        """All rows at once (for small `num_rows`)."""
        parts = list(self.chunks())
        return tuple(np.concatenate(p) for p in zip(*parts))

    def _chunk(self, rng, size):
        bags = [zipf_ranks(rng, c, size * k, self.zipf_exponent).reshape(size, k)
                for c, k in zip(self.cardinalities, self.multi_hot_sizes)]
        categorical = np.concatenate(bags, axis=1)

        def hidden(f, salt=0):
            return hidden_value(f, bags[f], salt).mean(axis=1)

        # integer counts like Criteo's I1..I13, so raw files round-trip exactly
        raw_dense = np.floor(rng.exponential(scale=20.0, size=(size, NUM_DENSE)))
        dense = np.log1p(raw_dense).astype(np.float32)
        logit = np.full(size, -1.2)
        logit += 0.3 * (dense[:, 0] - dense[:, 0].mean())
        for f in self.signal:
            logit += 0.6 * hidden(f)
        # pairwise terms reward the model's dot interactions
        for f, g in zip(self.signal[::2], self.signal[1::2]):
            logit += 0.4 * hidden(f, 1) * hidden(g, 1)
        labels = (rng.random(size) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
        return dense, categorical.astype(np.int32), labels[:, None]

    def write_raw(self, path, chunk_size=65_536):
        """Writes the rows in Criteo's raw TAB format (then renames into place).

        Categorical ids become 8 hex characters (a 32-bit hash of feature and
        id, as Criteo's values are hashes); dense values are the integers
        behind `log1p`. Returns the number of rows written.
        """
        if any(k > 1 for k in self.multi_hot_sizes):
            raise ValueError(
                "Criteo's raw format holds one id per feature; these rows have "
                f"multi-hot sizes {list(self.multi_hot_sizes)}.")
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.partial")
        rows = 0
        with open(temporary, "w", encoding="utf-8") as file:
            for dense, categorical, labels in self.chunks(chunk_size):
                raw_dense = np.rint(np.expm1(dense.astype(np.float64))).astype(np.int64)
                hexes = [
                    np.char.mod("%08x", hex_code(f, categorical[:, f]))
                    for f in range(categorical.shape[1])
                ]
                for i in range(len(labels)):
                    fields = [str(int(labels[i, 0]))]
                    fields += [str(v) for v in raw_dense[i]]
                    fields += [h[i] for h in hexes]
                    file.write("\t".join(fields) + "\n")
                rows += len(labels)
        os.replace(temporary, path)
        return rows
