"""Atomic writes with umask modes, atomic folders, and the model loader."""

import os
import pathlib
import socket
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest

from keras_mixed_dim.io_utils import InvalidModelFileError
from keras_mixed_dim.io_utils import atomic_folder
from keras_mixed_dim.io_utils import atomic_save_model
from keras_mixed_dim.io_utils import atomic_write_json
from keras_mixed_dim.io_utils import atomic_write_text
from keras_mixed_dim.io_utils import load_model_file
from keras_mixed_dim.layers import MixedDimEmbedding


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    with atomic_folder(tmp_path / "set") as folder:
        (folder / "a").write_text("1")
        (folder / "b").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "set") as folder:
            (folder / "a").write_text("2")
            raise RuntimeError("killed")
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["a", "b"]
    assert (tmp_path / "set" / "a").read_text() == "1"
    with atomic_folder(tmp_path / "set") as folder:
        (folder / "c").write_text("3")
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    ids = keras.Input(shape=(), dtype="int32")
    out = MixedDimEmbedding(30, 4, num_blocks=2)(ids)
    model = keras.Model(ids, out)
    path = tmp_path_factory.mktemp("m") / "m.keras"
    atomic_save_model(model, path)
    return path, model


def test_load_model_file_loads_a_valid_file(model_file):
    path, model = model_file
    loaded = load_model_file(path)
    ids = np.array([0, 7, 29], np.int32)
    np.testing.assert_allclose(loaded.predict(ids, verbose=0), model.predict(ids, verbose=0))


def test_truncated_model_file_is_named(model_file, tmp_path):
    path, _ = model_file
    truncated = tmp_path / "cut.keras"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InvalidModelFileError, match=r"cut\.keras is not a valid model file"):
        load_model_file(truncated)


def test_garbage_config_is_named(model_file, tmp_path):
    path, _ = model_file
    garbage = tmp_path / "garbage.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(garbage, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, b"{not json" if item.filename == "config.json" else data)
    with pytest.raises(InvalidModelFileError, match=r"garbage\.keras is not a valid model file"):
        load_model_file(garbage)


def test_missing_and_misnamed_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file"):
        load_model_file(tmp_path / "none.keras")
    (tmp_path / "m.h5").write_bytes(b"x")
    with pytest.raises(InvalidModelFileError, match="expected a .keras file"):
        load_model_file(tmp_path / "m.h5")


def test_concurrent_folder_replacements_all_succeed(tmp_path):
    """Writers racing on one folder (two runs building the same cache): none
    fails, and the folder left is one writer's complete set."""
    import threading

    errors = []

    def writer(tag):
        try:
            for round_ in range(30):
                with atomic_folder(tmp_path / "set") as folder:
                    for name in ("a", "b", "c"):
                        (folder / name).write_text(f"{tag}-{round_}")
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    contents = {(tmp_path / "set" / n).read_text() for n in ("a", "b", "c")}
    assert len(contents) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_a_killed_writers_partial_model_file_is_removed_by_the_next_save(tmp_path):
    host = socket.gethostname().replace("/", "_")
    # a writer that ran and is gone, as after kill -9 (its pid exited)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".m.partial-{host}-{dead.pid}-0123abcd.keras"
    live = tmp_path / f".m.partial-{host}-{os.getpid()}-4567abcd.keras"
    other_host = tmp_path / ".m.partial-elsewhere-1-89abcdef.keras"
    old_other_host = tmp_path / ".m.partial-elsewhere-2-89abcdef.keras"
    old_form = tmp_path / ".m.partial-0a1b2c3d.keras"  # before owners were named
    other_stem = tmp_path / f".n.partial-{host}-{dead.pid}-0123abcd.keras"
    for path in (stale, live, other_host, old_other_host, old_form, other_stem):
        path.write_bytes(b"half a model")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old_other_host, (day_ago, day_ago))
    os.utime(old_form, (day_ago, day_ago))
    written = []

    class Model:  # records the partial name the save goes through
        def save(self, path):
            written.append(pathlib.Path(path))
            pathlib.Path(path).write_bytes(b"model")

    atomic_save_model(Model(), tmp_path / "m.keras")
    assert (tmp_path / "m.keras").read_bytes() == b"model"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.keras", live.name, other_host.name, other_stem.name])
    # the save's own partial names this host and process, so a run after a
    # kill -9 of this one can tell it is stale
    assert written[0].name.startswith(f".m.partial-{host}-{os.getpid()}-")
