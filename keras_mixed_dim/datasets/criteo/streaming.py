"""A streaming synthetic stand-in for Criteo 1TB multi-hot (MLPerf
DLRM-DCNv2's data): any cardinalities and bag sizes, batch by batch.

Nothing of the size of a table or of the dataset is ever held: batch `i` is
drawn from a generator seeded with `(seed, i)`, so any batch can be made
again without replaying the ones before it (a resumed run reads the same
data as an uninterrupted one), and a table's hidden values come from an
integer hash of `(feature, id)`.

Ids follow a power law per table, `P(rank r) ~ (r + 1)**-s`, with id 0 the
most frequent (ids come ranked). The exponent `s` falls with the table's
size (`default_exponent`): 1.2 below 10**4 rows, 1.1 below 10**6, 1.05 from
10**6 rows on. Near 1 the tail is long: in a 40M-row table at s = 1.05
about 14% of the lookups fall outside the top million ids, so the tail is
trained, not just stored. A bag of `k` ids draws `k` ids independently.

Labels come from a planted model: a logistic of one dense feature, of a
hidden value per id of the 8 largest features (averaged over the bag) and
of products of those values for pairs of them, so a model predicts well
only by learning the ids' embeddings and their crosses.
"""

import numpy as np

from keras_mixed_dim.datasets.criteo.synthetic import hidden_value
from keras_mixed_dim.datasets.criteo.synthetic import zipf_ranks

SIGNAL_FEATURES = 8
# Ids buffered per feature before they are folded into its counts.
_COUNT_FLUSH_IDS = 1 << 24


def default_exponent(rows):
    """The power-law exponent of a table of `rows` ids (see the module doc)."""
    if rows >= 1_000_000:
        return 1.05
    if rows >= 10_000:
        return 1.1
    return 1.2


class StreamingCriteo:
    """Synthetic multi-hot Criteo batches, generated on demand.

    Args:
        cardinalities: Ids per sparse feature.
        batch_size: Rows per batch.
        multi_hot_sizes: Ids per sample of each feature (default: 1 each).
        num_dense: Dense features (log1p of exponential counts).
        exponents: Per-feature power-law exponents (default:
            `default_exponent` of each cardinality).
        seed: The stream's seed; batch `i` depends on `(seed, i)` only.

    Example:

    ```python
    data = StreamingCriteo(config.cardinalities, 1024,
                           multi_hot_sizes=config.bag_sizes)
    inputs, labels = data.batch(0)
    ```
    """

    def __init__(self, cardinalities, batch_size, multi_hot_sizes=None, num_dense=13,
                 exponents=None, seed=0):
        cardinalities = tuple(int(c) for c in cardinalities)
        if not cardinalities or min(cardinalities) < 1:
            raise ValueError(f"`cardinalities` must be integers >= 1. "
                             f"Received: {cardinalities!r}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1. "
                             f"Received: {batch_size!r}")
        if multi_hot_sizes is None:
            multi_hot_sizes = (1,) * len(cardinalities)
        multi_hot_sizes = tuple(int(k) for k in multi_hot_sizes)
        if len(multi_hot_sizes) != len(cardinalities) or min(multi_hot_sizes) < 1:
            raise ValueError(f"`multi_hot_sizes` must be one integer >= 1 per feature "
                             f"({len(cardinalities)}). Received: {multi_hot_sizes!r}")
        if exponents is None:
            exponents = [default_exponent(c) for c in cardinalities]
        exponents = tuple(float(s) for s in exponents)
        if len(exponents) != len(cardinalities) or min(exponents) <= 0:
            raise ValueError(f"`exponents` must be one number > 0 per feature. "
                             f"Received: {exponents!r}")
        self.cardinalities = cardinalities
        self.batch_size = int(batch_size)
        self.multi_hot_sizes = multi_hot_sizes
        self.num_dense = int(num_dense)
        self.exponents = exponents
        self.seed = int(seed)
        order = np.argsort(cardinalities, kind="stable")[::-1]
        self.signal = tuple(int(f) for f in order[:SIGNAL_FEATURES])

    @property
    def num_features(self):
        return len(self.cardinalities)

    def sparse_ids(self, index):
        """Batch `index`'s ids: one `(batch, k_f)` int32 array per feature."""
        rng = self._rng(index)
        return [zipf_ranks(rng, rows, (self.batch_size, k), s).astype(np.int32)
                for rows, k, s in zip(self.cardinalities, self.multi_hot_sizes,
                                      self.exponents)]

    def batch(self, index):
        """Batch `index` as `(inputs, labels)`: inputs `{"dense": (batch,
        num_dense) float32, "categorical": ...}` (see `pack`), labels
        `(batch, 1)` float32."""
        ids = self.sparse_ids(index)
        rng = self._rng(index, stream=1)
        raw = np.floor(rng.exponential(scale=20.0, size=(self.batch_size,
                                                          self.num_dense)))
        dense = np.log1p(raw).astype(np.float32)
        logit = np.full(self.batch_size, -1.2)
        if self.num_dense:
            logit += 0.3 * (dense[:, 0] - np.log1p(20.0))
        values = {f: hidden_value(f, ids[f]).mean(axis=1) for f in self.signal}
        for f in self.signal:
            logit += 0.6 * values[f]
        for f, g in zip(self.signal[::2], self.signal[1::2]):
            logit += 0.4 * values[f] * values[g]
        labels = rng.random(self.batch_size) < 1.0 / (1.0 + np.exp(-logit))
        return {"dense": dense, "categorical": self.pack(ids)}, \
            labels.astype(np.float32)[:, None]

    @staticmethod
    def pack(ids):
        """`dlrm(bag_sizes=...)`'s `"categorical"` input from per-feature
        ids: each feature's bag in consecutive columns, `(batch, sum(k))`."""
        return np.concatenate(ids, axis=1)

    def planning_counts(self, num_batches, features=None, progress=True):
        """Per-feature id counts over batches `0 .. num_batches - 1` (the
        sampling pass a planner reads), each an int64 array of the feature's
        cardinality; None for features not in `features`.

        Ids are folded in with one `bincount` per feature every 16M ids, so
        memory stays at the counts plus one buffer."""
        from tqdm.auto import tqdm

        wanted = set(range(self.num_features) if features is None else features)
        counts = [np.zeros(rows, np.int64) if f in wanted else None
                  for f, rows in enumerate(self.cardinalities)]
        buffers = {f: [] for f in wanted}
        buffered = dict.fromkeys(wanted, 0)

        def flush(f):
            if buffers[f]:
                ids = np.concatenate(buffers[f])
                counts[f] += np.bincount(ids, minlength=self.cardinalities[f])
                buffers[f], buffered[f] = [], 0

        for index in tqdm(range(int(num_batches)), desc="planning counts",
                          unit="batch", disable=not progress, mininterval=1.0):
            for f, ids in enumerate(self.sparse_ids(index)):
                if f in wanted:
                    buffers[f].append(ids.ravel())
                    buffered[f] += ids.size
                    if buffered[f] >= _COUNT_FLUSH_IDS:
                        flush(f)
        for f in wanted:
            flush(f)
        return counts

    def dataset(self, steps, start=0):
        """A `keras.utils.PyDataset` of batches `start .. start + steps - 1`."""
        return _Batches(self, int(steps), int(start))

    def _rng(self, index, stream=0):
        if int(index) != index or index < 0:
            raise ValueError(f"A batch index must be an integer >= 0. Received: {index!r}")
        return np.random.default_rng((self.seed, int(index), stream))


def _py_dataset():
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self, data, steps, start):
            super().__init__()
            self.data, self.steps, self.start = data, steps, start

        def __len__(self):
            return self.steps

        def __getitem__(self, index):
            if not 0 <= index < self.steps:
                raise IndexError(index)
            return self.data.batch(self.start + index)

    return Batches


def _Batches(data, steps, start):
    return _py_dataset()(data, steps, start)
