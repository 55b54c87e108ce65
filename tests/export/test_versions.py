"""Version folders: atomic, never overwritten, one per concurrent export,
int64-bounded, stale partial folders cleaned."""

import os
import signal
import subprocess
import sys
import time

import pytest

from keras_mixed_dim.export import MAX_VERSION
from keras_mixed_dim.export import clean_stale_partials
from keras_mixed_dim.export import write_version
from tests.helpers import fake_saved_model as make


def entries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != ".export.lock")


def test_versions_count_up_and_never_overwrite(tmp_path):
    assert write_version(tmp_path, "m", make)[1] == 1
    assert write_version(tmp_path, "m", make)[1] == 2
    assert write_version(tmp_path, "m", make, version=10)[1] == 10
    assert write_version(tmp_path, "m", make)[1] == 11
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_version(tmp_path, "m", make, version=2)
    assert entries(tmp_path / "m") == ["1", "10", "11", "2"]


@pytest.mark.parametrize("version", [0, -1, 2**63, 10**20, "99999999999999999999",
                                     True, 1.5, "x"])
def test_versions_outside_int64_are_rejected(tmp_path, version):
    with pytest.raises(ValueError, match="version"):
        write_version(tmp_path, "m", make, version=version)
    assert not (tmp_path / "m").exists() or entries(tmp_path / "m") == []


def test_no_automatic_version_past_int64(tmp_path):
    assert write_version(tmp_path, "m", make, version=MAX_VERSION)[1] == MAX_VERSION
    with pytest.raises(ValueError, match="int64"):
        write_version(tmp_path, "m", make)


def test_export_script_rejects_a_huge_version(run_python, tmp_path):
    result = run_python("export/export_model.py", "--model", tmp_path / "m.keras",
                        "--name", "m", "--base", tmp_path,
                        "--version", "99999999999999999999", check=False)
    assert result.returncode != 0 and "int64" in result.stderr


def test_failed_write_leaves_no_version(tmp_path):
    def broken(path):
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_version(tmp_path, "m", broken)
    assert entries(tmp_path / "m") == []


@pytest.mark.multiprocess
def test_concurrent_exports_each_get_a_version(repo_root, tmp_path):
    go = tmp_path / "go"
    programs = [subprocess.Popen(
        [sys.executable, "tests/programs/export_version.py", tmp_path, "m", go, "1"],
        cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)]
    for program in programs:
        assert program.stdout.readline().strip() == "ready"
    go.touch()  # both pick a version at about the same moment
    results = [p.communicate(timeout=120) for p in programs]
    for program, (stdout, stderr) in zip(programs, results):
        assert program.returncode == 0, stderr[-3000:]
    versions = sorted(int(stdout.split('"version": ')[1].split(",")[0])
                      for stdout, _ in results)
    assert versions == [1, 2]
    assert entries(tmp_path / "m") == ["1", "2"]


@pytest.mark.multiprocess
def test_killed_export_partial_is_cleaned_by_the_next(repo_root, tmp_path):
    program = subprocess.Popen(
        [sys.executable, "tests/programs/export_killed.py", tmp_path, "m"],
        cwd=repo_root, stdout=subprocess.PIPE, text=True)
    assert program.stdout.readline().strip() == "writing"
    partials = [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".partial-")]
    assert len(partials) == 1
    # a live export's reservation is neither removed nor reused
    assert clean_stale_partials(tmp_path / "m") == []
    assert write_version(tmp_path, "m", make)[1] == 2
    os.kill(program.pid, signal.SIGKILL)
    program.wait()
    assert write_version(tmp_path, "m", make)[1] == 3
    assert entries(tmp_path / "m") == ["2", "3"]


def test_old_partials_of_other_hosts_are_cleaned(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    old = model_dir / ".partial-7-otherhost-123-abcdef12"
    recent = model_dir / ".partial-8-otherhost-124-abcdef12"
    old.mkdir()
    recent.mkdir()
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    assert clean_stale_partials(model_dir) == [old]
    assert recent.exists()


def test_an_explicit_version_being_written_by_a_live_export_is_refused(tmp_path):
    import socket

    model_dir = tmp_path / "m"
    model_dir.mkdir()
    host = socket.gethostname().replace("/", "_")
    # version 5 reserved by a live process (this one), not yet renamed
    in_flight = model_dir / f".partial-5-{host}-{os.getpid()}-0123abcd"
    in_flight.mkdir()
    with pytest.raises(FileExistsError, match=r"m/5 exists \(or is being written\)"):
        write_version(tmp_path, "m", make, version=5)
    assert entries(model_dir) == [in_flight.name]
    assert write_version(tmp_path, "m", make, version=6)[1] == 6
