"""Shared fixtures. TensorFlow is the default backend; `.ci/run` runs the
backend-agnostic suites again under JAX and PyTorch (KERAS_BACKEND)."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import pathlib  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROGRAMS = pathlib.Path(__file__).resolve().parent / "programs"
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s on 2 cores")
    config.addinivalue_line(
        "markers", "multiprocess: starts several cooperating processes")
    # pytest-xdist registers it too; here so that --strict-markers holds
    # when the suite runs without xdist
    config.addinivalue_line(
        "markers", "xdist_group(name): tests that run on one xdist worker")


@pytest.fixture
def shared_data():
    """The real data samples beside the checkout; skips when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


class PythonRun:
    """Runs Python programs in fresh processes from the repository root.

    `run("-c", code)`, `run(PROGRAMS / "x.py", *args)` or
    `run("examples/criteo.py", ...)`; fails the test with the program's
    output when it exits non-zero (unless `check=False`).
    """

    def __call__(self, *argv, env=None, timeout=600, check=True, drop_env=()):
        environment = {k: v for k, v in os.environ.items() if k not in drop_env}
        environment.update(env or {})
        result = subprocess.run(
            [sys.executable, *map(str, argv)], cwd=ROOT, env=environment,
            capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, (
                f"{argv[:2]} exited {result.returncode}\n--- stdout\n"
                f"{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}")
        return result

    def program(self, name, *args, **kwargs):
        """Runs `tests/programs/NAME` and returns its stdout."""
        return self(PROGRAMS / name, *args, **kwargs).stdout

    @staticmethod
    def last_json(stdout, prefix=""):
        """The JSON on the last stdout line that starts with `prefix`."""
        lines = [line for line in stdout.splitlines() if line.startswith(prefix)]
        return json.loads(lines[-1][len(prefix):])


@pytest.fixture(scope="session")
def run_python():
    return PythonRun()


@pytest.fixture
def free_ports():
    def ports(count):
        sockets = [socket.socket() for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        found = [s.getsockname()[1] for s in sockets]
        for s in sockets:
            s.close()
        return found

    return ports
