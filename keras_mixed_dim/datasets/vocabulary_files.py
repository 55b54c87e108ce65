"""Vocabulary sets on disk: one `NAME.tsv` per feature and a `vocabulary.json`
manifest, written as a whole and verified on load. numpy / Python only.

Each `NAME.tsv` holds one kept value per line in index order, `value TAB
count`; line `i` is index `i`. These files are what the in-graph lookup
tables read (`keras_mixed_dim.datasets.lookup_table`), in training and as
SavedModel assets in serving, so both map values the same way.

The set is written into a temporary folder and renamed into place, so an
interrupted run leaves the previous set or none, never a mix of two runs;
the manifest records every file's line count and SHA-256, and `read_manifest`
rejects a set whose files do not match it.
"""

import hashlib
import json
import os
import pathlib

from keras_mixed_dim.io_utils import atomic_folder
from keras_mixed_dim.io_utils import file_mode
from keras_mixed_dim.io_utils import file_sha256

MANIFEST = "vocabulary.json"
FORMAT = "keras_mixed_dim.vocabulary/1"


class VocabularyFileError(ValueError):
    """A vocabulary folder that is incomplete, altered or of another format."""


def _check_value(name, number, value):
    text = str(value)
    if "\t" in text or "\n" in text or "\r" in text:
        raise ValueError(
            f"Vocabulary {name!r} value {number} ({text!r}) holds a TAB or line "
            "break, which the one-value-per-line files cannot store.")
    return text


def write_vocabulary_files(folder, columns, header=None, write_hook=None):
    """Writes a vocabulary set atomically.

    Args:
        folder: The target folder; an existing set there is replaced whole.
        columns: `{name: iterable of (value, count)}` in index order; values
            are strings or integers, streamed to disk (never all in memory).
        header: JSON-serializable fields stored in the manifest.
        write_hook: Called with each file's name after it is written (tests
            use it to interrupt a write between two files).

    Returns:
        The manifest dict.
    """
    folder = pathlib.Path(folder)
    files = {}
    with atomic_folder(folder) as temporary:
        for name, pairs in columns.items():
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"Bad vocabulary name {name!r}.")
            path = temporary / f"{name}.tsv"
            digest = hashlib.sha256()
            lines = 0
            with open(path, "wb") as file:
                buffer = []
                for value, count in pairs:
                    text = _check_value(name, lines, value)
                    buffer.append(f"{text}\t{int(count)}\n")
                    lines += 1
                    if len(buffer) >= 65536:
                        data = "".join(buffer).encode()
                        digest.update(data)
                        file.write(data)
                        buffer = []
                data = "".join(buffer).encode()
                digest.update(data)
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(path, file_mode())
            files[name] = {"file": path.name, "lines": lines,
                           "sha256": digest.hexdigest()}
            if write_hook is not None:
                write_hook(name)
        manifest = {"format": FORMAT, "files": files, **(header or {})}
        manifest_path = temporary / MANIFEST
        with open(manifest_path, "w", encoding="utf-8") as file:
            json.dump(manifest, file, indent=2)  # keeps the files in index order
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.chmod(manifest_path, file_mode())
    return manifest


def read_manifest(folder, names=None, verify=True):
    """The manifest of a vocabulary set, after checking its files.

    Args:
        folder: A folder written by `write_vocabulary_files`.
        names: Feature names the set must hold (None: any).
        verify: Check every file's line count and SHA-256 (reads the files).

    Raises:
        FileNotFoundError: No manifest in `folder`.
        VocabularyFileError: The manifest is unreadable or of another format,
            a file is missing, or a file does not match the manifest.
    """
    folder = pathlib.Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"No vocabulary set at {folder} (no {MANIFEST}).")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise VocabularyFileError(f"{path} is not a valid manifest: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise VocabularyFileError(
            f"{path} is not a {FORMAT} manifest (written by an older version, or "
            "not a vocabulary set); build the vocabulary again.")
    files = manifest.get("files", {})
    if names is not None and list(files) != list(names):
        raise VocabularyFileError(
            f"{folder} holds vocabularies {list(files)}, expected {list(names)}.")
    for name, entry in files.items():
        file = folder / entry["file"]
        if not file.is_file():
            raise VocabularyFileError(f"{folder} is incomplete: {file.name} is missing.")
        if verify:
            if file_sha256(file) != entry["sha256"]:
                raise VocabularyFileError(
                    f"{file} does not match {path} (changed or half-written); "
                    "build the vocabulary again.")
    return manifest


def read_column(folder, manifest, name):
    """`(values, counts)` of one vocabulary as lists of strings and ints."""
    path = pathlib.Path(folder) / manifest["files"][name]["file"]
    values, counts = [], []
    with open(path, encoding="utf-8", newline="") as file:
        for number, line in enumerate(file, start=1):
            value, tab, count = line.rstrip("\n").rpartition("\t")
            if not tab or not count.isdigit():
                raise VocabularyFileError(
                    f"{path}:{number}: expected 'value TAB count', got {line!r}")
            values.append(value)
            counts.append(int(count))
    if len(values) != manifest["files"][name]["lines"]:
        raise VocabularyFileError(
            f"{path} has {len(values)} lines, its manifest says "
            f"{manifest['files'][name]['lines']}.")
    return values, counts


def vocabulary_path(folder, manifest, name):
    """The `NAME.tsv` file of one vocabulary."""
    return pathlib.Path(folder) / manifest["files"][name]["file"]
