"""Writes that never leave a half-written file behind: write, then rename."""

import json
import os
import pathlib
import tempfile


def atomic_write_text(path, text):
    """Writes `text` to `path` through a temporary file in the same folder."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
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


def atomic_save_model(model, path):
    """`model.save(path)` for a `.keras` path, renamed into place when complete."""
    path = pathlib.Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Models are saved as .keras files. Received: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.partial.keras")
    try:
        model.save(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
