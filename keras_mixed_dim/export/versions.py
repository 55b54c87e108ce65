"""Versioned, atomic TF Serving folders `BASE/NAME/VERSION` (no TensorFlow).

A version is written into a hidden `.partial-*` folder and renamed to its
integer name when complete, so TF Serving (which watches integer folder
names only) never sees a partial export. Choosing a version and reserving
it happen under a lock on `BASE/NAME/.export.lock`, so concurrent exports
to the same model each get their own version.
"""

import contextlib
import fcntl
import os
import pathlib
import shutil
import socket
import time
import uuid

from keras_mixed_dim.io_utils import STALE_AFTER_SECONDS
from keras_mixed_dim.io_utils import folder_mode
from keras_mixed_dim.io_utils import partial_is_stale

# TF Serving stores versions as int64.
MAX_VERSION = 2**63 - 1
_PARTIAL = ".partial-"


def check_version(version):
    """`version` as an int in `[1, 2**63 - 1]`, or a `ValueError` naming it."""
    if isinstance(version, bool) or not isinstance(version, (int, str)):
        raise ValueError(f"`version` must be an integer >= 1. Received: {version!r}")
    try:
        number = int(version)
    except ValueError:
        raise ValueError(
            f"`version` must be an integer >= 1. Received: {version!r}") from None
    if number < 1 or number > MAX_VERSION:
        raise ValueError(
            f"`version` must be in [1, {MAX_VERSION}] (TF Serving versions are "
            f"int64). Received: {version!r}")
    return number


def _versions(model_dir):
    found = []
    for path in model_dir.iterdir():
        if path.name.isascii() and path.name.isdigit():
            found.append(int(path.name))
    return found


def _partial_owner(path):
    """`(version, host, pid)` of a `.partial-VERSION-HOST-PID-TOKEN` folder."""
    parts = path.name[len(_PARTIAL):].split("-")
    if len(parts) < 4:
        return None
    try:
        return int(parts[0]), "-".join(parts[1:-2]), int(parts[-2])
    except ValueError:
        return None


def _is_stale(path, owner, now, stale_after):
    host, pid = (None, None) if owner is None else owner[1:]
    return partial_is_stale(path, host, pid, now, stale_after)


def clean_stale_partials(model_dir, stale_after=STALE_AFTER_SECONDS):
    """Removes `.partial-*` folders of killed exports: those of a process of
    this host that no longer runs, and any older than `stale_after` seconds.

    Args:
        model_dir: The `BASE/NAME` folder.
        stale_after: Age in seconds after which any `.partial-*` folder is
            removed, whatever process made it.

    Returns:
        The removed paths.

    Example:

    >>> clean_stale_partials("/tmp/models/dlrm")           # doctest: +SKIP
    """
    model_dir = pathlib.Path(model_dir)
    removed = []
    now = time.time()
    for path in model_dir.glob(_PARTIAL + "*"):
        if _is_stale(path, _partial_owner(path), now, stale_after):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def _locked(model_dir):
    with open(model_dir / ".export.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _reserve(model_dir, version):
    """Picks the version and creates its `.partial-*` folder, under the lock."""
    with _locked(model_dir):
        clean_stale_partials(model_dir)
        taken = set(_versions(model_dir))
        reserved = {owner[0] for p in model_dir.glob(_PARTIAL + "*")
                    if (owner := _partial_owner(p)) is not None}
        if version is None:
            version = max(taken | reserved, default=0) + 1
            if version > MAX_VERSION:
                raise ValueError(
                    f"{model_dir} already holds version {version - 1}; the next "
                    f"would pass TF Serving's int64 limit. Give `version` explicitly.")
        elif version in taken or version in reserved:
            raise FileExistsError(
                f"{model_dir / str(version)} exists (or is being written); "
                "versions are never overwritten.")
        host = socket.gethostname().replace("/", "_")
        partial = model_dir / f"{_PARTIAL}{version}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        partial.mkdir(mode=folder_mode())
        os.chmod(partial, folder_mode())
        return version, partial


def write_version(base, name, write_fn, version=None):
    """Writes `BASE/NAME/VERSION` via a hidden temporary folder and a rename.

    `write_fn(path)` must create the folder `path` and write into it (a
    SavedModel writer does). TF Serving never sees a partial export; a
    crash leaves at most a `.partial-*` folder, which the next export
    removes once its process is gone.

    Args:
        base: The model base folder.
        name: The model name (a plain folder name).
        write_fn: Writes the version's contents to the path it is given.
        version: An integer in `[1, 2**63 - 1]`; default: one more than the
            newest version (or reservation) under `BASE/NAME`.

    Returns:
        `(path, version)`.

    Example:

    >>> path, version = write_version("/tmp/models", "dlrm",
    ...                               lambda p: model.export(p))  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"`name` must be a plain folder name. Received: {name!r}")
    if version is not None:
        version = check_version(version)
    model_dir = pathlib.Path(base) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    version, partial = _reserve(model_dir, version)
    target = model_dir / str(version)
    try:
        # the reservation is an empty folder; SavedModel writers want to
        # create theirs, so they write one level down and it moves up
        inner = partial / "export"
        write_fn(inner)
        with _locked(model_dir):
            if target.exists():
                raise FileExistsError(f"{target} appeared during the export.")
            os.rename(inner, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target, version
