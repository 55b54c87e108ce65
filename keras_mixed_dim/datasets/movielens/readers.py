"""MovieLens readers for the published layouts, from a folder, file or zip.

* ml-100k: `u.data` (and its `u1.base`-style splits), TAB separated
  `user item rating timestamp`;
* ml-1m, ml-10m: `ratings.dat`, `user::item::rating::timestamp`;
* ml-latest, ml-latest-small, ml-20m, ml-25m: `ratings.csv` with the header
  `userId,movieId,rating,timestamp`.

numpy only. `keras_mixed_dim.datasets.movielens.tfds` reads the same data
through tensorflow-datasets.
"""

import pathlib
import zipfile

import numpy as np

from keras_mixed_dim.datasets.movielens.ratings import Ratings

# File names in the order they are looked for inside a folder or zip.
LAYOUTS = {
    "u.data": "\t",
    "ratings.dat": "::",
    "ratings.csv": ",",
}
CSV_HEADER = ("userId", "movieId", "rating", "timestamp")
# Every published MovieLens set rates on 0.5 .. 5 stars (ml-100k and ml-1m
# in whole stars 1 .. 5, the later sets in half stars from 0.5).
MOVIELENS_RATING_RANGE = (0.5, 5.0)
_INT64 = (-(2**63), 2**63 - 1)


def read_ratings(path, rating_range=MOVIELENS_RATING_RANGE):
    """Reads MovieLens ratings from a folder, a ratings file or a zip.

    Args:
        path: A folder holding `u.data`, `ratings.dat` or `ratings.csv`
            (directly or one level down, as the GroupLens zips unpack), one
            of those files (or a split like `u1.base`), or a GroupLens zip.
        rating_range: `(low, high)`: a rating outside it is an error naming
            the file and line. Default: MovieLens's 0.5 .. 5 stars; pass
            another range for data on another scale, or None to accept any
            finite rating.

    Returns:
        `Ratings` with integer raw ids, float32 ratings, int64 timestamps.

    Raises:
        FileNotFoundError: No ratings file at `path`.
        ValueError: A malformed line, a rating out of range or an id beyond
            int64, naming the file and line number.

    Example:

    >>> ratings = read_ratings("../shared/data/ml-100k")   # doctest: +SKIP
    >>> len(ratings.ratings)                               # doctest: +SKIP
    100000
    """
    if rating_range is not None:
        low, high = (float(v) for v in rating_range)
        if not low <= high:
            raise ValueError(f"`rating_range` must be (low, high) with low <= high. "
                             f"Received: {rating_range!r}")
        rating_range = (low, high)
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No MovieLens data at {path}.")
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = _find_in_names(archive.namelist())
            if member is None:
                raise FileNotFoundError(
                    f"{path} holds none of {', '.join(LAYOUTS)}."
                )
            with archive.open(member) as raw:
                return _parse(raw, f"{path}!{member}", _separator_for(member),
                              rating_range)
    if path.is_dir():
        found = _find_in_dir(path)
        if found is None:
            raise FileNotFoundError(
                f"{path} holds none of {', '.join(LAYOUTS)} (looked one level "
                f"down too)."
            )
        path = found
    with open(path, "rb") as raw:
        return _parse(raw, str(path), _separator_for(path.name), rating_range)


def _find_in_names(names):
    for layout in LAYOUTS:
        for name in sorted(names, key=len):
            if name == layout or name.endswith("/" + layout):
                return name
    return None


def _find_in_dir(folder):
    for layout in LAYOUTS:
        for candidate in [folder / layout, *sorted(folder.glob(f"*/{layout}"))]:
            if candidate.is_file():
                return candidate
    return None


def _separator_for(name):
    name = str(name)
    if name.endswith(".dat"):
        return "::"
    if name.endswith(".csv"):
        return ","
    # u.data and the GroupLens splits (u1.base, ua.test, ...) are TAB files.
    return "\t"


def _parse(lines, source, separator, rating_range=None):
    users, items, ratings, timestamps = [], [], [], []
    # bytes, decoded line by line, so a bad byte is reported with its line
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{source}:{number}: not valid UTF-8 (byte 0x{raw[error.start]:02x} "
                f"at column {error.start + 1}).") from None
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split(separator)
        if number == 1 and separator == ",":
            if tuple(f.strip() for f in fields) != CSV_HEADER:
                raise ValueError(
                    f"{source}:1: expected the header {','.join(CSV_HEADER)}, "
                    f"got {line!r}."
                )
            continue
        if len(fields) != 4:
            raise ValueError(
                f"{source}:{number}: expected 4 fields separated by "
                f"{separator!r} (user, item, rating, timestamp), got "
                f"{len(fields)}: {line!r}."
            )
        try:
            user, item, timestamp = int(fields[0]), int(fields[1]), int(fields[3])
            rating = float(fields[2])
        except ValueError:
            raise ValueError(
                f"{source}:{number}: user, item and timestamp must be integers "
                f"and the rating a number, got {line!r}."
            ) from None
        if not np.isfinite(rating):
            raise ValueError(f"{source}:{number}: rating {fields[2]!r} is not finite.")
        if rating_range is not None and not rating_range[0] <= rating <= rating_range[1]:
            raise ValueError(
                f"{source}:{number}: rating {fields[2]!r} is outside "
                f"[{rating_range[0]:g}, {rating_range[1]:g}] (pass another "
                "`rating_range`, or None, for data on another scale).")
        for name, value in (("user", user), ("item", item), ("timestamp", timestamp)):
            if not _INT64[0] <= value <= _INT64[1]:
                raise ValueError(
                    f"{source}:{number}: {name} {value} does not fit in int64.")
        users.append(user)
        items.append(item)
        ratings.append(rating)
        timestamps.append(timestamp)
    if not ratings:
        raise ValueError(f"{source} holds no ratings.")
    return Ratings(
        np.asarray(users, dtype=np.int64),
        np.asarray(items, dtype=np.int64),
        np.asarray(ratings, dtype=np.float32),
        np.asarray(timestamps, dtype=np.int64),
    )
