"""The raw Criteo Kaggle (Display Advertising Challenge) format, numpy only.

A row is `label TAB I1..I13 TAB C1..C26` (the test file has no label): 13
integer features that may be empty or negative and 26 categorical features of
8 lowercase hex characters or empty.
"""

import re

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"

NUM_DENSE = 13
NUM_CATEGORICAL = 26
DENSE_NAMES = tuple(f"I{i}" for i in range(1, NUM_DENSE + 1))
CATEGORICAL_NAMES = tuple(f"C{i}" for i in range(1, NUM_CATEGORICAL + 1))

# Rows per categorical feature after DLRM's preprocessing of Kaggle train.txt.
KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
    3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105,
    142572,
)

_DENSE = r"(-?[0-9]+)?"
_CATEGORICAL = r"([0-9a-f]{8})?"
LABELED_LINE = re.compile(
    r"[01]" + rf"(\t{_DENSE}){{{NUM_DENSE}}}" + rf"(\t{_CATEGORICAL}){{{NUM_CATEGORICAL}}}"
)
UNLABELED_LINE = re.compile(
    _DENSE + rf"(\t{_DENSE}){{{NUM_DENSE - 1}}}"
    + rf"(\t{_CATEGORICAL}){{{NUM_CATEGORICAL}}}"
)


def is_gzip(path):
    """Whether the file at `path` is gzip-compressed (by its magic bytes, not
    its name: `train.txt` may well be gzipped, `x.gz` not)."""
    with open(path, "rb") as file:
        return file.read(2) == GZIP_MAGIC


def open_text(path):
    """`path` opened for reading UTF-8 lines, through gzip when it is
    gzip-compressed (see `is_gzip`)."""
    import gzip

    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def line_pattern(has_label=True):
    """The regular expression a whole valid line matches."""
    return LABELED_LINE if has_label else UNLABELED_LINE


def describe_problem(line, has_label=True):
    """A short reason why `line` is not a valid row."""
    fields = line.split("\t")
    expected = NUM_DENSE + NUM_CATEGORICAL + (1 if has_label else 0)
    if len(fields) != expected:
        return f"expected {expected} TAB-separated fields, got {len(fields)}"
    offset = 0
    if has_label:
        if fields[0] not in ("0", "1"):
            return f"label must be 0 or 1, got {fields[0]!r}"
        offset = 1
    for name, value in zip(DENSE_NAMES, fields[offset : offset + NUM_DENSE]):
        if not re.fullmatch(_DENSE, value):
            return f"{name} must be an integer or empty, got {value!r}"
    for name, value in zip(CATEGORICAL_NAMES, fields[offset + NUM_DENSE :]):
        if not re.fullmatch(_CATEGORICAL, value):
            return f"{name} must be 8 lowercase hex characters or empty, got {value!r}"
    return "malformed line"


def transform_dense(values):
    """DLRM's dense transform: missing and negatives -> 0, then log(1 + x).

    Args:
        values: The integer columns, a numpy array (NaN or negative for
            missing).

    Returns:
        A float32 array of the same shape.

    Example:

    >>> transform_dense(np.array([[0.0, 1.0, -3.0, np.nan]]))
    array([[0.       , 0.6931472, 0.       , 0.       ]], dtype=float32)
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    return np.log1p(np.maximum(values, 0.0)).astype(np.float32)
