"""Writes that never leave a half-written file or folder behind, with the
usual umask-respecting modes, and a model loader with clear errors."""

import contextlib
import errno
import hashlib
import json
import os
import pathlib
import shutil
import socket
import tempfile
import time
import uuid
import zipfile


def _umask():
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode():
    """The mode `open(path, "w")` would give a new file (0666 & ~umask).

    `tempfile.mkstemp` creates files 0600, which would keep a TF Serving
    running as another user (or a second user of a shared folder) out.
    """
    return 0o666 & ~_umask()


def folder_mode():
    """The mode `os.mkdir` would give a new folder (0777 & ~umask)."""
    return 0o777 & ~_umask()


def atomic_write_text(path, text):
    """Writes `text` to `path` through a temporary file in the same folder."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, file_mode())
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_json(path, value):
    """Writes `value` as JSON to `path`, crash safe (`atomic_write_text`).

    Args:
        path: Destination file (its folder is created if missing).
        value: A JSON-serialisable value, written with sorted keys, an
            indent of 2 and a final newline, so that files compare by text.

    Example:

    >>> atomic_write_json(folder / "meta.json", {"step": 3})  # doctest: +SKIP
    """
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def make_temporary_folder(parent, prefix):
    """A new hidden folder in `parent` (same file system, so it can be
    renamed into place), with the usual folder mode rather than 0700."""
    parent = pathlib.Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = pathlib.Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(folder, folder_mode())
    return folder


def replace_folder(source, target, attempts=20):
    """Puts the complete folder `source` at `target`, replacing any folder
    there; a reader sees the old set or the new one, never a mix.

    An existing `target` is first renamed aside (a folder cannot be renamed
    over a non-empty one), so between the two renames `target` is briefly
    absent, which readers treat like a missing set. When another process
    puts its own set in place in that moment, this one moves it aside and
    tries again: the last writer wins, and no writer fails.
    """
    source, target = pathlib.Path(source), pathlib.Path(target)
    for attempt in range(attempts):
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(target, old)
        except FileNotFoundError:
            old = None
        try:
            os.rename(source, target)
            return
        except OSError as error:
            if old is not None and not target.exists():
                with contextlib.suppress(OSError):
                    os.rename(old, target)
                    old = None
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) \
                    or attempt == attempts - 1:
                raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(target):
    """Yields a temporary folder beside `target`; on success it replaces
    `target` as a whole (see `replace_folder`), on error it is removed."""
    target = pathlib.Path(target)
    temporary = make_temporary_folder(target.parent, f".{target.name}.partial-")
    try:
        yield temporary
        replace_folder(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def file_sha256(path, chunk=1 << 20):
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_save_model(model, path):
    """`model.save(path)` for a `.keras` path, renamed into place when complete.

    The model is written to a hidden `.STEM.partial-HOST-PID-TOKEN.keras`
    beside `path`. Partial files of `path` left by a writer that was killed
    (kill -9, a power cut) are removed first, by the rule export's
    `.partial-*` folders follow: the writer was a process of this host that
    no longer runs, or the file is older than a day (another host's writer).
    A live writer's partial file is left alone.
    """
    path = pathlib.Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Models are saved as .keras files. Received: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_model_partials(path)
    host = socket.gethostname().replace("/", "_")
    temporary = path.with_name(
        f".{path.stem}.partial-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}.keras")
    try:
        model.save(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# A partial file or folder of a writer on another host is judged by age only.
STALE_AFTER_SECONDS = 24 * 3600


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partial_is_stale(path, host, pid, now, stale_after=STALE_AFTER_SECONDS):
    """Whether the partial file or folder `path` of writer `pid` on `host`
    (both None when unknown) was left by a killed writer: a process of this
    host that no longer runs, or anything older than `stale_after` seconds."""
    if host == socket.gethostname().replace("/", "_") and pid is not None and not _alive(pid):
        return True
    try:
        return now - path.stat().st_mtime > stale_after
    except FileNotFoundError:
        return False


def clean_stale_model_partials(path):
    """Removes the partial files of `atomic_save_model(model, path)` whose
    writer is dead (see there). Returns the removed paths."""
    path = pathlib.Path(path)
    prefix, suffix = f".{path.stem}.partial-", ".keras"
    removed, now = [], time.time()
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.iterdir():
        name = candidate.name
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        # HOST-PID-TOKEN; files of the older TOKEN-only form go by age
        parts = name[len(prefix):-len(suffix)].split("-")
        host = pid = None
        if len(parts) >= 3 and parts[-2].isdigit():
            host, pid = "-".join(parts[:-2]), int(parts[-2])
        if partial_is_stale(candidate, host, pid, now):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


class InvalidModelFileError(ValueError):
    """A file that exists but does not hold a loadable Keras model."""


def load_model_file(path, **kwargs):
    """`keras.models.load_model` with one clear error for a bad file.

    A truncated `.keras` archive makes Keras report "File not found" and a
    damaged `config.json` a bare `JSONDecodeError`; both become an
    `InvalidModelFileError` naming the file.

    Raises:
        FileNotFoundError: Nothing at `path`.
        InvalidModelFileError: `path` is not a valid `.keras` model file.
    """
    import keras

    # registers the package's layers, models and optimizers (a model saved
    # compiled with the sparse row optimizer names it in its config)
    import keras_mixed_dim.layers  # noqa: F401
    import keras_mixed_dim.models  # noqa: F401
    import keras_mixed_dim.optimizers  # noqa: F401
    import keras_mixed_dim.optimizers.sparse_rows  # noqa: F401

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}.")
    if path.suffix != ".keras":
        raise InvalidModelFileError(f"{path} is not a valid model file: expected "
                                    "a .keras file.")
    if not zipfile.is_zipfile(path):
        raise InvalidModelFileError(
            f"{path} is not a valid model file: not a .keras (zip) archive, "
            "perhaps truncated by an interrupted copy or save.")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise InvalidModelFileError(
                    f"{path} is not a valid model file: it has no config.json.")
            json.loads(archive.read("config.json"))
            damaged = archive.testzip()
        if damaged is not None:
            raise InvalidModelFileError(
                f"{path} is not a valid model file: {damaged} is damaged.")
    except InvalidModelFileError:
        raise
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError,
            EOFError, OSError) as error:
        raise InvalidModelFileError(
            f"{path} is not a valid model file: {error}") from error
    try:
        return keras.models.load_model(path, **kwargs)
    except (zipfile.BadZipFile, json.JSONDecodeError, EOFError, KeyError,
            FileNotFoundError) as error:
        raise InvalidModelFileError(
            f"{path} is not a valid model file: {type(error).__name__}: {error}"
        ) from error
