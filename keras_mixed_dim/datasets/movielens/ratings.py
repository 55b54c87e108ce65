"""Rating triples, frequency-ranked vocabularies and deterministic splits.

numpy only: shared by the MovieLens readers, the synthetic generator and the
examples on every backend.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Ratings:
    """Ratings as parallel arrays of raw ids.

    Attributes:
        users: Raw user ids (strings or integers), one per rating.
        items: Raw item ids, one per rating.
        ratings: float32 ratings.
        timestamps: int64 seconds, or None when the source has none.

    Args:
        users: Raw user ids (strings or integers), one per rating.
        items: Raw item ids, one per rating.
        ratings: float32 ratings.
        timestamps: int64 seconds, or None when the source has none.

    Example:

    >>> r = Ratings(np.array([1, 1, 2]), np.array([10, 11, 10]),
    ...             np.array([4.0, 3.0, 5.0], "float32"))
    >>> r.subset(np.array([0, 2])).items
    array([10, 10])
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.ratings)
        for name in ("users", "items", "timestamps"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(
                    f"`{name}` has {len(value)} entries but there are {n} ratings."
                )

    def __len__(self):
        return len(self.ratings)

    def subset(self, index):
        return Ratings(
            self.users[index],
            self.items[index],
            self.ratings[index],
            None if self.timestamps is None else self.timestamps[index],
        )


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Raw ids ranked by frequency: index 0 is the most frequent raw id.

    Raw ids not in the vocabulary map to `oov_index == len(tokens)`, the last
    index, so with a `MixedDimEmbedding` they share one learned vector in the
    smallest block.

    Attributes:
        tokens: Raw ids in rank order.
        counts: Their counts, non-increasing.

    Args:
        tokens: Raw ids in rank order.
        counts: Their counts, non-increasing.

    Example:

    >>> vocab = Vocabulary.from_values(np.array([7, 3, 7, 7, 3, 9]))
    >>> vocab.lookup(np.array([7, 3, 9, 42]))             # 42 -> oov_index
    array([0, 1, 2, 3], dtype=int32)
    """

    tokens: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_values(cls, values, min_count=1):
        """Ranks the distinct raw ids of `values` by count, ties by raw id."""
        tokens, counts = np.unique(np.asarray(values), return_counts=True)
        keep = counts >= min_count
        tokens, counts = tokens[keep], counts[keep]
        order = np.argsort(-counts, kind="stable")
        return cls(tokens[order], counts[order].astype(np.int64))

    @property
    def oov_index(self):
        return len(self.tokens)

    @property
    def size(self):
        """Number of indices including the out-of-vocabulary one."""
        return len(self.tokens) + 1

    @property
    def index_counts(self):
        """Counts per index (the OOV index last, with count 0)."""
        return np.concatenate([self.counts, [0]])

    def lookup(self, values):
        """Indices of raw ids; unknown ids get `oov_index`."""
        values = np.asarray(values)
        sorter = np.argsort(self.tokens, kind="stable")
        sorted_tokens = self.tokens[sorter]
        position = np.searchsorted(sorted_tokens, values)
        position = np.minimum(position, len(sorted_tokens) - 1)
        found = sorted_tokens[position] == values if len(sorted_tokens) else False
        return np.where(found, sorter[position], self.oov_index).astype(np.int32)


def split_random(num_ratings, test_fraction=0.1, val_fraction=0.1, seed=0):
    """Random train / validation / test index arrays.

    `test_fraction` of all ratings go to test; `val_fraction` of the rest to
    validation. Deterministic for a given seed.

    Args:
        num_ratings: Number of ratings.
        test_fraction: Share of all ratings that go to test.
        val_fraction: Share of the rest that goes to validation.
        seed: Seed of the permutation.

    Returns:
        `(train, val, test)` int64 index arrays into the ratings.

    Example:

    >>> train, val, test = split_random(100, test_fraction=0.1, val_fraction=0.1)
    >>> len(train), len(val), len(test)
    (81, 9, 10)
    """
    _check_fraction("test_fraction", test_fraction)
    _check_fraction("val_fraction", val_fraction)
    order = np.random.default_rng(seed).permutation(num_ratings)
    num_test = int(round(test_fraction * num_ratings))
    num_val = int(round(val_fraction * (num_ratings - num_test)))
    test = np.sort(order[:num_test])
    val = np.sort(order[num_test : num_test + num_val])
    train = np.sort(order[num_test + num_val :])
    return train, val, test


def split_by_time(users, timestamps, test_fraction=0.1, val_fraction=0.1):
    """Per-user temporal split: each user's latest ratings go to test.

    For each user, the last `test_fraction` of their ratings by time (ties by
    position) are test, the `val_fraction` before those are validation, the
    rest train. Users with one rating keep it in train.

    Args:
        users: User id of each rating.
        timestamps: Time of each rating.
        test_fraction: Share of each user's ratings that go to test.
        val_fraction: Share of each user's ratings that go to validation.

    Returns:
        `(train, val, test)` int64 index arrays into the ratings.

    Example:

    >>> train, val, test = split_by_time(ratings.users, ratings.timestamps)  # doctest: +SKIP
    """
    _check_fraction("test_fraction", test_fraction)
    _check_fraction("val_fraction", val_fraction)
    if timestamps is None:
        raise ValueError("A split by time needs timestamps; this data has none.")
    users = np.asarray(users)
    order = np.lexsort((np.arange(len(users)), np.asarray(timestamps), users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    lengths = np.diff(np.r_[starts, len(users)])
    position = np.arange(len(users)) - np.repeat(starts, lengths)
    length = np.repeat(lengths, lengths)
    num_test = np.floor(test_fraction * length).astype(int)
    num_val = np.floor(val_fraction * (length - num_test)).astype(int)
    from_end = length - 1 - position
    part = np.where(from_end < num_test, 2, np.where(from_end < num_test + num_val, 1, 0))
    split = np.empty(len(users), dtype=np.int8)
    split[order] = part
    return (
        np.flatnonzero(split == 0),
        np.flatnonzero(split == 1),
        np.flatnonzero(split == 2),
    )


def _check_fraction(name, value):
    if not 0 <= value < 1:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {value!r}")
