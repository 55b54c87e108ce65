"""Criteo vocabularies: a streaming counting pass and bounded, ranked vocabularies.

numpy / Python only. Index layout of feature `j`: `[0, kept_j)` are the kept
values ranked by count (ties by value); `[kept_j, kept_j + num_oov_buckets)`
are hash buckets for every other value. The buckets come last in rank order,
so a `MixedDimEmbedding` over these indices puts them in its smallest block.
"""

import collections
import dataclasses
import gzip
import hashlib
import os
import pathlib
import zlib

import warnings

import numpy as np
from tqdm.auto import tqdm

from keras_mixed_dim.datasets.criteo.format import CATEGORICAL_NAMES
from keras_mixed_dim.datasets.criteo.format import NUM_CATEGORICAL
from keras_mixed_dim.datasets.criteo.format import NUM_DENSE
from keras_mixed_dim.datasets.criteo.format import describe_problem
from keras_mixed_dim.datasets.criteo.format import is_gzip
from keras_mixed_dim.datasets.criteo.format import line_pattern
from keras_mixed_dim.datasets.vocabulary_files import VocabularyFileError
from keras_mixed_dim.datasets.vocabulary_files import read_column
from keras_mixed_dim.datasets.vocabulary_files import read_manifest
from keras_mixed_dim.datasets.vocabulary_files import write_vocabulary_files

# Bytes per kept value beside its UTF-8 key: the int64 index a lookup table
# stores (as `lookup_table.INDEX_BYTES`, which needs TensorFlow to import).
INDEX_BYTES = 8


@dataclasses.dataclass
class CountResult:
    """Per-feature value counts of a counting pass."""

    counters: list
    rows: int
    skipped: int


def count_values(paths, has_label=True, skip_malformed=False, progress=True):
    """Counts every categorical value of every feature, streaming line by line.

    Memory grows with the number of distinct values, not with the file.

    Args:
        paths: Raw Criteo files, plain or gzip-compressed (recognized by
            their first bytes, whatever their names).
        has_label: Whether rows start with the label (train) or not (test).
        skip_malformed: Count and skip malformed lines instead of raising.
        progress: Show a progress bar over the bytes read.

    Returns:
        `(counters, meta)`: one `collections.Counter` of values per categorical
        feature, and a dict with the rows read and the lines skipped.

    Raises:
        ValueError: A malformed line (file, line number and reason), unless
            `skip_malformed`; a truncated or damaged gzip file.

    Example:

    >>> counters, meta = count_values(["train.txt"])        # doctest: +SKIP
    >>> counters[0].most_common(3)                          # doctest: +SKIP
    """
    counters = [collections.Counter() for _ in range(NUM_CATEGORICAL)]
    rows = skipped = 0
    paths = [pathlib.Path(p) for p in paths]
    total = sum(p.stat().st_size for p in paths)
    with tqdm(total=total, unit="B", unit_scale=True, desc="counting values",
              disable=not progress) as bar:
        for path in paths:
            try:
                result = _count_file(path, has_label, counters, skip_malformed, bar)
            except (EOFError, OSError, zlib.error) as error:
                if not is_gzip(path):
                    raise
                # a truncated or damaged .gz stream
                raise ValueError(f"{path}: not a valid gzip file ({error})") from None
            rows += result[0]
            skipped += result[1]
    return CountResult(counters, rows, skipped)


def _count_file(path, has_label, counters, skip_malformed, bar):
    """Counts one file (plain or gzip) into `counters`: `(rows, skipped)`.
    The progress bar follows the bytes read from disk, so a gzip file
    advances it by its compressed size as the size total expects."""
    pattern = line_pattern(has_label)
    offset = NUM_DENSE + (1 if has_label else 0)
    rows = skipped = 0
    with open(path, "rb") as handle:
        file = gzip.GzipFile(fileobj=handle, mode="rb") if is_gzip(path) else handle
        reported = 0
        for number, raw in enumerate(file, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                line, problem = None, (
                    f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at "
                    f"column {error.start + 1})")
            else:
                if not line:
                    continue
                problem = (None if pattern.fullmatch(line)
                           else describe_problem(line, has_label))
            if problem is not None:
                if skip_malformed:
                    skipped += 1
                    continue
                raise ValueError(f"{path}:{number}: {problem}")
            for counter, value in zip(counters, line.split("\t")[offset:]):
                counter[value] += 1
            rows += 1
            if rows % 4096 == 0:
                position = handle.tell()
                bar.update(position - reported)
                reported = position
        bar.update(path.stat().st_size - reported)
    return rows, skipped


@dataclasses.dataclass(frozen=True)
class CriteoVocabulary:
    """Ranked, bounded vocabularies of the 26 categorical features.

    Attributes:
        tokens: Per feature, the kept values in rank order.
        counts: Per feature, their counts (non-increasing).
        dropped: Per feature, how many occurrences fell to the OOV buckets.
        num_oov_buckets: Hash buckets for values not kept.
        min_count: Values seen fewer times than this were not kept.
        top_k: At most this many values kept per feature (None: no cap).

    Args:
        tokens: Per feature, the kept values in rank order.
        counts: Per feature, their counts (non-increasing).
        dropped: Per feature, how many occurrences fell to the OOV buckets.
        num_oov_buckets: Hash buckets for values not kept.
        min_count: Values seen fewer times than this were not kept.
        top_k: At most this many values kept per feature (None: no cap).
        folder: Where the vocabulary was saved or loaded from (None: not saved).

    Example:

    >>> vocab, meta = build_or_load_vocabulary(["train.txt"], min_count=2)  # doctest: +SKIP
    >>> vocab.sizes()                                       # doctest: +SKIP
    """

    tokens: tuple
    counts: tuple
    dropped: tuple
    num_oov_buckets: int = 1
    min_count: int = 1
    top_k: int | None = None
    # Where the set was saved or loaded from: the lookup tables read their
    # files there rather than writing temporary copies.
    folder: pathlib.Path | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def from_counts(cls, counters, min_count=1, top_k=None, num_oov_buckets=1):
        if num_oov_buckets < 1:
            raise ValueError(
                f"`num_oov_buckets` must be >= 1. Received: {num_oov_buckets!r}"
            )
        if min_count < 1:
            raise ValueError(f"`min_count` must be >= 1. Received: {min_count!r}")
        if top_k is not None and top_k < 0:
            raise ValueError(f"`top_k` must be >= 0 or None. Received: {top_k!r}")
        tokens, counts, dropped = [], [], []
        for counter in counters:
            kept = sorted(
                ((v, c) for v, c in counter.items() if c >= min_count),
                key=lambda item: (-item[1], item[0]),
            )
            if top_k is not None:
                kept = kept[:top_k]
            tokens.append(tuple(v for v, _ in kept))
            counts.append(np.array([c for _, c in kept], dtype=np.int64))
            dropped.append(int(sum(counter.values()) - counts[-1].sum()))
        return cls(tuple(tokens), tuple(counts), tuple(dropped), num_oov_buckets,
                   min_count, top_k)

    @property
    def sizes(self):
        """Indices per feature: kept values plus OOV buckets."""
        return tuple(len(t) + self.num_oov_buckets for t in self.tokens)

    def index_counts(self, feature):
        """Counts per index of one feature; the OOV buckets count 0 so that
        they rank last (in the smallest block)."""
        return np.concatenate(
            [self.counts[feature], np.zeros(self.num_oov_buckets, dtype=np.int64)]
        )

    @property
    def bytes(self):
        """Payload bytes of the lookup tables: UTF-8 keys plus an int64 index
        per kept value (hash-table overhead not included)."""
        return sum(
            sum(len(v.encode()) for v in tokens) + INDEX_BYTES * len(tokens)
            for tokens in self.tokens
        )

    def save(self, folder, meta=None, write_hook=None):
        """Writes `C1.tsv` .. `C26.tsv` (value TAB count, ranked) and the
        `vocabulary.json` manifest as one set: into a temporary folder renamed
        into place, so an interrupted save never leaves a mix of two sets.

        Args:
            folder: Target folder (replaced whole if it exists).
            meta: JSON-serializable facts stored with the set (sources,
                settings, the fingerprint of the model it belongs to).
            write_hook: See `write_vocabulary_files`.
        """
        folder = pathlib.Path(folder)
        write_vocabulary_files(
            folder,
            {name: zip(tokens, counts.tolist())
             for name, tokens, counts in zip(CATEGORICAL_NAMES, self.tokens, self.counts)},
            header={
                "num_oov_buckets": self.num_oov_buckets,
                "min_count": self.min_count,
                "top_k": self.top_k,
                "dropped": list(self.dropped),
                "meta": meta or {},
            },
            write_hook=write_hook,
        )
        object.__setattr__(self, "folder", folder)
        return folder

    @staticmethod
    def read_header(folder, verify=True):
        """The verified manifest of a saved set (see `read_manifest`)."""
        return read_manifest(folder, CATEGORICAL_NAMES, verify=verify)

    @classmethod
    def load(cls, folder):
        """Loads a set written by `save`, after checking every file against
        its manifest.

        Raises:
            FileNotFoundError: No set at `folder`.
            VocabularyFileError: An incomplete or altered set.
        """
        folder = pathlib.Path(folder)
        header = cls.read_header(folder)
        tokens, counts = [], []
        for name in CATEGORICAL_NAMES:
            values, numbers = read_column(folder, header, name)
            tokens.append(tuple(values))
            counts.append(np.array(numbers, dtype=np.int64))
        return cls(tuple(tokens), tuple(counts), tuple(header["dropped"]),
                   header["num_oov_buckets"], header["min_count"], header["top_k"],
                   folder=folder)


def source_signature(paths):
    """What a saved vocabulary was built from: file names, sizes, mtimes."""
    return [
        {"path": os.path.abspath(p), "bytes": os.path.getsize(p),
         "mtime": int(os.path.getmtime(p))}
        for p in paths
    ]


def _cache_folder(path):
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    return cache / "keras_mixed_dim" / "criteo" / f"{path.name}.{digest}.vocab"


def default_vocabulary_folder(path):
    """`PATH.vocab` next to the data when its folder is writable, else a
    per-file folder under `~/.cache/keras_mixed_dim/criteo`."""
    path = pathlib.Path(path).resolve()
    if os.access(path.parent, os.W_OK):
        return path.with_name(path.name + ".vocab")
    return _cache_folder(path)


def _candidate_folders(first_path):
    """Next to the data, then the user cache: a shared data folder may hold
    another user's set that this user can read but not replace."""
    path = pathlib.Path(first_path).resolve()
    beside = path.with_name(path.name + ".vocab")
    return [beside, _cache_folder(path)]


def _load_matching(folder, signature, settings):
    try:
        header = CriteoVocabulary.read_header(folder, verify=False)
    except FileNotFoundError:
        return None
    except (VocabularyFileError, OSError, KeyError) as error:
        warnings.warn(f"Ignoring the vocabulary at {folder}: {error}", stacklevel=3)
        return None
    meta = header.get("meta", {})
    if meta.get("sources") != signature or meta.get("settings") != settings:
        return None
    try:
        return CriteoVocabulary.load(folder), meta
    except (VocabularyFileError, OSError, KeyError) as error:
        warnings.warn(f"Ignoring the vocabulary at {folder}: {error}", stacklevel=3)
        return None


def build_or_load_vocabulary(paths, folder=None, min_count=1, top_k=None,
                             num_oov_buckets=1, has_label=True, skip_malformed=False,
                             progress=True):
    """Loads the vocabulary saved for these files, or counts and saves it.

    A saved set is reused only when it was built from the same files (names,
    sizes, mtimes) with the same settings and its files match its manifest.
    Without `folder` the set goes next to the data (`PATH.vocab`) or, when
    that cannot be written (a read-only or another user's data folder), to
    `~/.cache/keras_mixed_dim/criteo`.

    Args:
        paths: Raw Criteo files, plain or gzip-compressed.
        folder: Where to save (and look for) the vocabulary; default next to
            the data.
        min_count: Keep values seen at least this many times.
        top_k: Keep at most this many values per feature (None: no cap).
        num_oov_buckets: Hash buckets for the values not kept.
        has_label: Whether rows start with the label (train) or not (test).
        skip_malformed: Count and skip malformed lines instead of raising.
        progress: Show a progress bar while counting.

    Returns:
        `(vocabulary, meta)` where meta holds rows, skipped lines and sources.

    Raises:
        ValueError: The files hold no valid row (nothing is saved then), or a
            malformed line (file, line, reason) unless `skip_malformed`.

    Example:

    >>> vocab, meta = build_or_load_vocabulary(["day_0.gz"], top_k=1_000_000)  # doctest: +SKIP
    >>> meta["rows"]                                        # doctest: +SKIP
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("No Criteo files given.")
    candidates = [pathlib.Path(folder)] if folder else _candidate_folders(paths[0])
    settings = {"min_count": min_count, "top_k": top_k,
                "num_oov_buckets": num_oov_buckets, "has_label": has_label,
                "skip_malformed": skip_malformed}
    signature = source_signature(paths)
    for candidate in candidates:
        found = _load_matching(candidate, signature, settings)
        if found is not None:
            return found
    result = count_values(paths, has_label, skip_malformed, progress)
    if result.rows == 0:
        raise ValueError(
            f"No valid Criteo rows in {', '.join(paths)}"
            + (f" ({result.skipped} malformed lines skipped)" if result.skipped else "")
            + ": nothing to train on.")
    vocabulary = CriteoVocabulary.from_counts(
        result.counters, min_count, top_k, num_oov_buckets
    )
    meta = {"rows": result.rows, "skipped": result.skipped, "sources": signature,
            "settings": settings}
    for number, candidate in enumerate(candidates):
        try:
            vocabulary.save(candidate, meta)
            return vocabulary, meta
        except PermissionError:
            if number == len(candidates) - 1:
                raise
    raise AssertionError("unreachable")
