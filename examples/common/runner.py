"""Runs an example script in its own process and returns its results JSON.

Sweeps and benchmarks use this instead of importing the examples: each run
gets a fresh process (its own Keras state, backend and peak memory).
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

EXAMPLES = pathlib.Path(__file__).resolve().parents[1]


class ExampleFailed(RuntimeError):
    """The example exited with an error; `stderr` holds its last lines."""

    def __init__(self, script, returncode, stderr):
        self.stderr = stderr
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(f"{script} exited with {returncode}: {last}")


def run_example(script, argv, env=None, timeout=None):
    """`python examples/SCRIPT argv... --results-json TMP`; returns the dict."""
    with tempfile.TemporaryDirectory(prefix="example-run-") as folder:
        results = pathlib.Path(folder) / "results.json"
        command = [sys.executable, str(EXAMPLES / script), *map(str, argv),
                   "--results-json", str(results)]
        process = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout,
            env=dict(os.environ, **(env or {})))
        if process.returncode != 0:
            raise ExampleFailed(script, process.returncode, process.stderr)
        return json.loads(results.read_text())
