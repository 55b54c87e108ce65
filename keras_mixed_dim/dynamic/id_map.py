"""The raw id -> slot map of a `DynamicEmbedding` (numpy, host side).

Raw ids are int64 keys of any value (negative ones and hashed 64-bit ids
included); strings are hashed to int64 with a stock TensorFlow op
(`tf.strings.to_hash_bucket_fast`, Fingerprint64), which the serving graph
applies too. Keys stay on the host: JAX without x64 has no int64, so what
reaches a model is int32 only (`pack`: slot, tag and the key's fallback
bucket, which the layer hashes from three pieces of the key's 64 bits).

The map owns a fixed number of slots, cut into tiers (tier 0 the widest);
every array it keeps has one entry per slot or a fixed size, so its bytes
never grow with the number of distinct ids seen:

- a key not admitted yet is counted in a decayed count-min sketch and is
  admitted when its estimate reaches `min_count`;
- an admitted key's count decays by `decay` per step; the map remembers when
  it was last seen (the step, or the batch's timestamp);
- when no slot is free, `"lfu"` evicts the least-counted slot (only for a
  candidate counted more), `"lru"` the least recently seen; `"ttl"` frees
  slots not seen for `ttl` steps (or timestamp units) and never evicts
  otherwise. Keys of the current batch are never evicted;
- every `rebalance_every` steps admitted keys are re-ranked by decayed count
  and moved between tiers (the most counted to the widest tier), moving only
  those whose tier changes.

Every (re)assignment of a slot gets a new tag. A batch carries the tag each
key was mapped with and the layer reads a slot only when the tags agree, so
a batch mapped before its slot changed hands (a prefetched batch) reads the
shared fallback, never another key's row.
"""

import dataclasses

import numpy as np

from keras_mixed_dim.dynamic.sketch import CountMinSketch

EVICTIONS = ("lfu", "lru", "ttl")
TAG_MODULUS = 2**31 - 1
# key, used flag, count, last seen, tag, the sorted index's key and slot, and
# the flag of a row write deferred to a later train step (`DynamicEmbedding.prepare`)
SLOT_BYTES = 8 + 1 + 4 + 8 + 4 + 8 + 4 + 1
PIECE_BITS = (22, 21, 21)
PACKED = 3  # slot, tag, fallback bucket


def raw_keys(ids):
    """Raw ids as an int64 numpy array of the same shape.

    Integers keep their 64 bits (uint64 ids are reinterpreted, so
    `2**64 - 1` is key -1); strings and bytes are hashed with
    `tf.strings.to_hash_bucket_fast(s, 2**63 - 1)`. Floats and booleans are
    refused.

    Args:
        ids: Integer ids (any int dtype), strings or bytes, numpy or Python.

    Returns:
        An int64 numpy array of the ids' shape.

    Example:

    >>> raw_keys(np.array([3, 2**40], "uint64"))
    array([            3, 1099511627776])
    """
    array = np.asarray(ids)
    if isinstance(ids, (list, tuple)) and array.dtype.kind == "f":
        # numpy turns Python ints beyond int64 (or mixed with negatives)
        # into floats; keep them as objects to keep every bit
        as_objects = np.asarray(ids, dtype=object)
        if all(isinstance(v, (int, np.integer)) for v in as_objects.ravel()):
            array = as_objects
    kind = array.dtype.kind
    if kind == "i":
        return array.astype(np.int64)
    if kind == "u":
        return array.astype(np.uint64).view(np.int64)
    if kind == "O" and array.size and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool)
            for v in array.ravel()):
        # Python ints beyond int64 or mixed with negatives (numpy gives an
        # object array): their low 64 bits, as for uint64 ids
        if any(not -(2**63) <= int(v) < 2**64 for v in array.ravel()):
            raise ValueError("Raw integer ids must fit 64 bits (signed or unsigned).")
        return np.array([(int(v) + 2**63) % 2**64 - 2**63 for v in array.ravel()],
                        np.int64).reshape(array.shape)
    if kind in "USO":
        # the serving graph's hash, so TensorFlow on every Keras backend
        from keras_mixed_dim.backend.tensorflow.strings import fingerprint_keys

        text = np.vectorize(lambda v: v if isinstance(v, bytes) else str(v).encode(),
                            otypes=[object])(array) if array.size else array.astype(bytes)
        return fingerprint_keys(text).reshape(array.shape)
    raise TypeError(
        f"Raw ids must be integers or strings; received dtype {array.dtype.name!r}.")


def key_pieces(keys):
    """int32 `keys.shape + (3,)`: bits 0-21, 22-42 and 43-63 of each key."""
    return np.stack(key_columns(keys), axis=-1).astype(np.int32)


def key_columns(keys):
    """`key_pieces` as three uint32 arrays of the keys' shape (unstacked)."""
    bits = np.asarray(keys, np.int64).view(np.uint64)
    columns, shift = [], 0
    for width in PIECE_BITS:
        piece = bits >> np.uint64(shift) if shift else bits
        if shift + width < 64:
            piece = piece & np.uint64((1 << width) - 1)
        columns.append(piece.astype(np.uint32))
        shift += width
    return columns


def pack(slots, tags, buckets):
    """The int32 array a `DynamicEmbedding` takes: `slots.shape + (3,)`."""
    return np.stack([np.asarray(slots, np.int32), np.asarray(tags, np.int32),
                     np.asarray(buckets, np.int32)], axis=-1)


@dataclasses.dataclass
class Changes:
    """What one update did to the slots; the layer applies it to its rows.

    Attributes:
        reset_slots: Slots given to newly admitted keys (rows and optimizer
            slots start fresh), in the order they were assigned.
        reset_keys: Those keys.
        move_from: Slots whose key moved tier (rebalancing).
        move_to: Where each went (same order).
        evicted_keys: Keys that lost their slot this step.

    Example:

    >>> id_map = DynamicIdMap([4, 8], min_count=1)
    >>> changes = id_map.update(np.array([10, 11, 10]))
    >>> sorted(changes.reset_keys.tolist())
    [10, 11]
    """

    reset_slots: np.ndarray
    reset_keys: np.ndarray
    move_from: np.ndarray
    move_to: np.ndarray
    evicted_keys: np.ndarray

    @property
    def empty(self):
        return not (self.reset_slots.size or self.move_from.size)


def _empty(dtype=np.int64):
    return np.zeros((0,), dtype)


def _first_sorted(pool, count, primary, secondary):
    """The first `count` of `pool` (ascending) ordered by `(primary,
    secondary, pool)` (`np.lexsort`'s order), sorting only the candidates:
    every entry whose `primary` is at most the `count`-th smallest."""
    count = min(count, pool.size)
    if 8 * count < pool.size:
        threshold = np.partition(primary, count - 1)[count - 1]
        near = primary <= threshold
        pool, primary, secondary = pool[near], primary[near], secondary[near]
    # `pool` ascending (a `nonzero`): a stable sort keeps it as the last key
    return pool[np.lexsort((secondary, primary))][:count]


def _first_by(values, count):
    """Indices of the `count` smallest `values` in the order of a stable
    argsort's first `count` (ties by index), sorting only the candidates
    (every entry at most the `count`-th smallest) where they are few
    among many (below some 256 values a whole sort costs less)."""
    if 8 * count < values.size and values.size >= 256:
        if not count:
            return np.zeros(0, np.intp)
        threshold = np.partition(values, count - 1)[count - 1]
        # ascending indices: the stable sort keeps ties in index order
        near = (values <= threshold).nonzero()[0]
        return near[np.argsort(values[near], kind="stable")][:count]
    return np.argsort(values, kind="stable")[:count]


class DynamicIdMap:
    """Raw int64 key -> slot, with admission, eviction and tiers.

    Args:
        tier_rows: Slots per tier, widest tier first.
        min_count: Sketch estimate at which a key is admitted (>= 1).
        eviction: `"lfu"`, `"lru"` or `"ttl"`.
        ttl: With `"ttl"`, steps (or timestamp units) after which an unseen
            key's slot is freed.
        decay: Factor applied to every count each step (1.0: no decay).
        rebalance_every: Steps between tier rebalances (0: never).
        sketch_width, sketch_depth: Size of the count-min sketch.
        seed: Seed of the sketch's hashes.

    Example:

    >>> id_map = DynamicIdMap([4, 8], min_count=2)
    >>> _ = id_map.update(np.array([10, 10, 11]))         # 10 seen twice: admitted
    >>> slots, tags = id_map.lookup(np.array([10, 11]))
    >>> slots >= 0
    array([ True, False])
    """

    # slots from which admissions merge into the sorted index instead of
    # re-sorting it (both give the same index; the merge's few more numpy
    # calls cost more than a sort of a small map)
    MERGE_INDEX_FROM = 4096

    def __init__(self, tier_rows, min_count=2, eviction="lfu", ttl=None, decay=1.0,
                 rebalance_every=100, sketch_width=1024, sketch_depth=2, seed=0):
        if eviction not in EVICTIONS:
            raise ValueError(f"`eviction` must be one of {EVICTIONS}. "
                             f"Received: eviction={eviction!r}")
        if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) \
                or min_count < 1:
            raise ValueError(f"`min_count` must be an integer >= 1. "
                             f"Received: min_count={min_count!r}")
        if eviction == "ttl" and (ttl is None or not ttl > 0):
            raise ValueError(f"eviction='ttl' needs `ttl` > 0 (steps, or timestamp "
                             f"units). Received: ttl={ttl!r}")
        if eviction != "ttl" and ttl is not None:
            raise ValueError(f"`ttl` is used by eviction='ttl' only; with "
                             f"eviction={eviction!r} it would be ignored. Received: "
                             f"ttl={ttl!r}")
        if not 0.0 < float(decay) <= 1.0:
            raise ValueError(f"`decay` must be in (0, 1]. Received: decay={decay!r}")
        tier_rows = [int(r) for r in tier_rows]
        if not tier_rows or min(tier_rows) < 1:
            raise ValueError(f"Every tier needs at least one row. Received: "
                             f"tier_rows={tier_rows}")
        self.tier_rows = tier_rows
        self.offsets = np.concatenate([[0], np.cumsum(tier_rows)]).astype(np.int64)
        self.num_slots = int(self.offsets[-1])
        self.min_count = int(min_count)
        self.eviction = eviction
        self.ttl = None if ttl is None else float(ttl)
        self.decay = float(decay)
        self.rebalance_every = int(rebalance_every)
        # computed from `offsets`, not an int64 array per slot that `bytes`
        # and the plan's SLOT_BYTES would have to count
        self.tier_of = _TierOf(self.offsets)
        self.sketch = CountMinSketch(sketch_width, sketch_depth, seed)
        n = self.num_slots
        self.keys = np.zeros(n, np.int64)
        self.used = np.zeros(n, bool)
        self.counts = np.zeros(n, np.float32)
        self.last = np.zeros(n, np.int64)
        self.tags = np.zeros(n, np.int32)
        self.index_keys = np.zeros(n, np.int64)
        self.index_slots = np.zeros(n, np.int32)
        self.dirty = np.zeros(n, bool)
        self.index_size = 0
        self.step = 0
        self.now = 0
        self.next_tag = 1

    # -------------------------------------------------------------- reading

    def find(self, keys):
        """Slot of each key (-1 where not admitted), same shape."""
        keys = np.asarray(keys, np.int64)
        index = self.index_keys[: self.index_size]
        if not index.size:
            return np.full(keys.shape, -1, np.int64)
        pos = np.minimum(index.searchsorted(keys), index.size - 1)
        found = index[pos] == keys
        return np.where(found, self.index_slots[pos], -1).astype(np.int64)

    def find_distinct(self, keys):
        """`find` of sorted distinct int64 `keys` (1-d): where the index is
        the smaller, its keys are searched among the batch's instead (a
        warm small map: hundreds of slots against a thousand keys)."""
        size = self.index_size
        if not 2 * size <= keys.size:
            return self.find(keys)
        index = self.index_keys[:size]
        slots = np.full(keys.size, -1, np.int64)
        if size:
            pos = keys.searchsorted(index)
            np.minimum(pos, keys.size - 1, out=pos)
            hit = keys[pos] == index
            slots[pos[hit]] = self.index_slots[:size][hit]
        return slots

    def lookup(self, keys):
        """`(slots, tags)` of `keys` without counting them (-1 and 0 where
        not admitted)."""
        keys = np.asarray(keys, np.int64)
        slots = self.find(keys)
        tags = np.where(slots >= 0, self.tags[np.maximum(slots, 0)], 0)
        return slots, tags

    @property
    def size(self):
        """Admitted keys."""
        return int(self.used.sum())

    @property
    def bytes(self):
        """Bytes of every array the map keeps (fixed at construction)."""
        arrays = (self.keys, self.used, self.counts, self.last, self.tags,
                  self.index_keys, self.index_slots, self.dirty)
        return sum(a.nbytes for a in arrays) + self.sketch.bytes

    # -------------------------------------------------------------- updating

    def _new_tags(self, count):
        if self.next_tag + count < TAG_MODULUS:
            # no wrap (all but one call in 2**31): tag i is next_tag + i + 1,
            # made in int32 without the modulus
            tags = np.arange(self.next_tag + 1, self.next_tag + count + 1, dtype=np.int32)
            self.next_tag += count
            return tags
        tags = np.arange(self.next_tag, self.next_tag + count, dtype=np.int64)
        tags %= TAG_MODULUS
        tags += 1
        self.next_tag = int((self.next_tag + count) % TAG_MODULUS)
        return tags.astype(np.int32)

    def _rebuild_index(self):
        slots = self.used.nonzero()[0]
        keys = self.keys[slots]
        # the admitted keys are distinct, so any sort gives the one order (a
        # stable sort of int64 is a merge sort, several times slower)
        order = keys.argsort()
        self.index_size = slots.size
        self.index_keys[: slots.size] = keys[order]
        self.index_slots[: slots.size] = slots[order]

    def update(self, keys, timestamps=None):
        """Counts a batch of keys, admits, evicts and rebalances.

        Args:
            keys: int64 raw keys, any shape.
            timestamps: Optional integer time of each key (or one per batch);
                with it, recency and `ttl` are in its units instead of steps.

        Returns:
            A `Changes`.
        """
        unique, counts = np.unique(np.asarray(keys, np.int64).ravel(), return_counts=True)
        return self.update_unique(unique, counts, timestamps)

    def update_unique(self, unique, counts, timestamps=None):
        """`update` of a batch given as its sorted distinct keys and how
        many times each occurs (what `np.unique(keys, return_counts=True)`
        gives), for a caller that needs them too."""
        return self.update_found(unique, counts, self.find_distinct(unique), timestamps)

    def update_found(self, unique, counts, slots, timestamps=None):
        """`update_unique` given `slots = find(unique)` too (left as it is),
        for a caller that looks the batch up anyway."""
        self.step += 1
        if timestamps is None:
            self.now = self.step
        elif np.size(timestamps):
            self.now = max(self.now, int(np.max(timestamps)))
        now = self.now
        if self.decay != 1.0:
            self.counts *= np.float32(self.decay)
            self.sketch.decay(self.decay)
        known = slots >= 0
        seen = slots[known]
        self.counts[seen] += counts[known].astype(np.float32)
        if seen.size:
            unknown = ~known
        self.last[seen] = now
        touched = None  # made when needed: a pass over every slot
        evicted = [_empty()]
        if self.eviction == "ttl":
            touched = np.zeros(self.num_slots, bool)
            touched[seen] = True
            expired = self.used & (self.last < now - self.ttl) & ~touched
            evicted.append(self.keys[expired])
            self.used[expired] = False
            changed = bool(expired.any())
        else:
            changed = False
        reset_slots, reset_keys = _empty(), _empty()
        fresh, fresh_counts = (unique[unknown], counts[unknown]) if seen.size else (
            unique, counts)
        if fresh.size:
            estimates = self.sketch.add(fresh, fresh_counts)
            admit = estimates >= self.min_count
            candidates, estimates = fresh[admit], estimates[admit]
        else:
            candidates = fresh
        if candidates.size:
            # narrow tiers first: a new key earns a wide row by rebalancing
            taken = self._free_slots(candidates.size)
            rest = candidates.size - taken.size
            needed = taken.size
            evicting = rest > 0 and self.eviction != "ttl"
            if evicting:
                if touched is None:
                    touched = np.zeros(self.num_slots, bool)
                    touched[seen] = True
                pool = (self.used & ~touched).nonzero()[0]
                needed += min(rest, pool.size)
            # candidates are sorted (as `unique`): a stable sort by estimate
            # breaks ties by key, as `np.lexsort((candidates, -estimates))`;
            # only the first `needed` can take a slot (a warm map: a few of
            # hundreds)
            order = _first_by(-estimates, needed)
            candidates, estimates = candidates[order], estimates[order]
            if evicting:
                if self.eviction == "lfu":
                    victims = _first_sorted(pool, rest, self.counts[pool], self.last[pool])
                    m = victims.size
                    # estimates fall and victims' counts rise: a prefix wins
                    wins = estimates[taken.size : taken.size + m] > self.counts[victims[:m]]
                    m = wins.size if wins.all() else int(wins.argmin())
                else:
                    victims = _first_sorted(pool, rest, self.last[pool], self.counts[pool])
                    m = victims.size
                victims = victims[:m]
                evicted.append(self.keys[victims].copy())
                taken = np.concatenate([taken, victims])
            n = taken.size
            self.keys[taken] = candidates[:n]
            self.used[taken] = True
            self.counts[taken] = estimates[:n]
            self.last[taken] = now
            self.tags[taken] = self._new_tags(n)
            reset_slots, reset_keys = taken.astype(np.int64), candidates[:n].copy()
            changed = changed or n > 0
        evicted = np.concatenate(evicted) if len(evicted) > 1 else evicted[0]
        move_from, move_to = _empty(), _empty()
        if (len(self.tier_rows) > 1 and self.rebalance_every > 0
                and self.step % self.rebalance_every == 0):
            move_from, move_to = self.rebalance()
        # most batches of a warm map change no slot: the sorted index stays
        # as it is; admissions and evictions merge into it (a rebuild sorts
        # every admitted key), tier moves (every `rebalance_every` steps)
        # rebuild it
        if move_from.size or (changed and self.num_slots < self.MERGE_INDEX_FROM):
            self._rebuild_index()
        elif changed:
            self._update_index(evicted, reset_keys, reset_slots)
        return Changes(reset_slots, reset_keys, move_from, move_to, evicted)

    def _free_slots(self, count):
        """Up to `count` free slots, narrowest tier first, ascending within
        a tier (tiers are ascending ranges of slots, so no sort)."""
        if self.used.all():   # a full map: the usual case once warm
            return _empty()
        free = (~self.used).nonzero()[0]
        bounds = np.searchsorted(free, self.offsets)
        return np.concatenate([free[bounds[t]:bounds[t + 1]]
                               for t in reversed(range(len(self.tier_rows)))])[:count]

    def _update_index(self, removed, added, added_slots):
        """The sorted index after `removed` keys left it and `added` keys
        (with their slots) joined: what `_rebuild_index` gives, by a merge."""
        size = self.index_size
        keys, slots = self.index_keys[:size], self.index_slots[:size]
        if removed.size:
            keep = np.ones(size, bool)
            keep[np.searchsorted(keys, removed)] = False
            keys, slots = keys[keep], slots[keep]
        if added.size > 1:
            order = np.argsort(added)
            added, added_slots = added[order], added_slots[order]
        new_size = keys.size + added.size
        merged_keys = np.empty(new_size, np.int64)
        merged_slots = np.empty(new_size, np.int32)
        at = np.searchsorted(keys, added) + np.arange(added.size)
        old = np.ones(new_size, bool)
        old[at] = False
        merged_keys[at], merged_slots[at] = added, added_slots
        merged_keys[old], merged_slots[old] = keys, slots
        self.index_keys[:new_size] = merged_keys
        self.index_slots[:new_size] = merged_slots
        self.index_size = new_size

    def rebalance(self):
        """Moves admitted keys to the tiers their decayed counts rank them
        in; returns `(move_from, move_to)` slots."""
        occupied = np.flatnonzero(self.used)
        ranked = occupied[np.lexsort((occupied, self.tier_of[occupied],
                                      -self.counts[occupied]))]
        target = np.searchsorted(self.offsets[1:], np.arange(ranked.size), side="right")
        current = self.tier_of[ranked]
        moving = target != current
        sources, targets = ranked[moving], target[moving]
        destinations = np.empty_like(sources)
        for t in range(len(self.tier_rows)):
            lo, hi = self.offsets[t], self.offsets[t + 1]
            leaving = sources[self.tier_of[sources] == t]
            available = np.sort(np.concatenate(
                [lo + np.flatnonzero(~self.used[lo:hi]), leaving]))
            incoming = targets == t
            destinations[incoming] = available[: int(incoming.sum())]
        if not sources.size:
            return _empty(), _empty()
        keys, counts, last = (self.keys[sources].copy(), self.counts[sources].copy(),
                              self.last[sources].copy())
        self.used[sources] = False
        self.used[destinations] = True
        self.keys[destinations] = keys
        self.counts[destinations] = counts
        self.last[destinations] = last
        self.tags[destinations] = self._new_tags(destinations.size)
        return sources.astype(np.int64), destinations.astype(np.int64)

    # -------------------------------------------------------------- state

    STATE = ("keys", "used", "counts", "last", "tags", "index_keys", "index_slots",
             "dirty")

    def get_state(self):
        """Every array and counter, as numpy arrays (for saving)."""
        state = {name: getattr(self, name).copy() for name in self.STATE}
        state["sketch"] = self.sketch.counters.copy()
        state["scalars"] = np.array([self.index_size, self.step, self.now,
                                     self.next_tag], np.int64)
        return state

    def set_state(self, state):
        """Restores what `get_state` returned (shapes must match this map's)."""
        for name in self.STATE:
            value = np.asarray(state[name])
            target = getattr(self, name)
            if value.shape != target.shape:
                raise ValueError(f"Saved id map array {name!r} has shape {value.shape}; "
                                 f"this map's is {target.shape} (another capacity?).")
            target[...] = value
        sketch = np.asarray(state["sketch"])
        if sketch.shape != self.sketch.counters.shape:
            raise ValueError(f"Saved sketch has shape {sketch.shape}; this map's is "
                             f"{self.sketch.counters.shape}.")
        self.sketch.counters[...] = sketch
        self.index_size, self.step, self.now, self.next_tag = (
            int(v) for v in np.asarray(state["scalars"]))


class _TierOf:
    """`tier_of[slots]`: the tier of each slot (ints or an int array)."""

    def __init__(self, offsets):
        self.offsets = offsets

    def __getitem__(self, slots):
        return np.searchsorted(self.offsets, slots, side="right") - 1
