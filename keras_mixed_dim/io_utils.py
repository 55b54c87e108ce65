"""Writes that never leave a half-written file or folder behind, with the
usual umask-respecting modes, and a model loader with clear errors."""

import contextlib
import errno
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
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
    """`model.save(path)` for a `.keras` path, renamed into place when complete."""
    path = pathlib.Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Models are saved as .keras files. Received: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.partial-{uuid.uuid4().hex[:8]}.keras")
    try:
        model.save(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


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
