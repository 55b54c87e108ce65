"""Configurations that take turns: one worker process per configuration
(Keras fixes its backend per process), each built once, then timed round
after round on the same data, the order reversed every other round, so a
burst of load on a shared machine hits every side alike and ratios are
read pair by pair. Used by `bench_vs_reference.py` and
`bench_embedding_rows.py`.

A worker is the benchmark script itself run with `--worker SPEC`; it calls
`serve(state)`, where `state.run(steps)` returns `(timed steps, seconds)`.
"""

import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def serve(state, **ready):
    """The worker's side: says READY (with its peak RSS and `ready`), then
    answers `run STEPS` until `quit` or the end of its input."""
    print("READY " + json.dumps({"peak_rss_gib": _peak_rss_gib(), **ready}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        steps, seconds = state.run(int(command[1]))
        print("RESULT " + json.dumps({"steps": steps, "seconds": seconds,
                                      "peak_rss_gib": _peak_rss_gib()}), flush=True)


def environment(backend):
    """The worker's environment for `backend`: `"tf"`, `"jax"`, `"torch"`
    (Keras's backends) or `"ref"` (facebookresearch/dlrm, PyTorch)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    if backend == "jax":
        env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    elif backend == "tf":
        env.update(KERAS_BACKEND="tensorflow")
    else:
        if backend == "torch":
            env.update(KERAS_BACKEND="torch")
        # PyTorch's OpenMP threads spin on their barriers: on a shared machine
        # a thread spinning while another process holds its core cost the
        # reference 2x to 4x here. Waiting passively gives it what an idle
        # machine would.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


class Worker:
    """A worker process of configuration `spec` (its backend first:
    `"tf/..."`), started with `command`; `time(steps)` is its examples/s."""

    def __init__(self, spec, command, batch, log):
        self.spec, self.batch = spec, batch
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            text=True, env=environment(spec.split("/")[0]))
        self.info = self._read("READY ")

    def _read(self, prefix):
        for line in self.process.stdout:
            if line.startswith(prefix):
                return json.loads(line[len(prefix):])
        raise RuntimeError(f"worker {self.spec} ended (exit {self.process.wait()}); "
                           "see the log")

    def time(self, steps):
        self.process.stdin.write(f"run {steps}\n")
        self.process.stdin.flush()
        result = self._read("RESULT ")
        self.info["peak_rss_gib"] = result["peak_rss_gib"]
        return self.batch * result["steps"] / result["seconds"]

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait()


def take_turns(specs, command_of, batch, rounds, steps, log, describe=None):
    """Starts a worker per spec (`command_of(spec)` its command line), times
    `rounds` turns of `steps` steps each, printing as it goes, and closes
    them. Returns `(rounds: [{spec: examples/s}], {spec: worker info})`;
    `describe(info)` adds to each worker's ready line."""
    workers = []
    try:
        for spec in specs:
            started = time.perf_counter()
            workers.append(Worker(spec, command_of(spec), batch, log))
            info = workers[-1].info
            print(f"#   {spec}: ready in {time.perf_counter() - started:.0f} s, peak RSS "
                  f"{info['peak_rss_gib']:.2f} GiB" + (describe(info) if describe else ""),
                  flush=True)
        results = []
        for r in range(rounds):
            order = workers if r % 2 == 0 else workers[::-1]
            rates = {w.spec: w.time(steps) for w in order}
            results.append(rates)
            print(f"#   round {r}: " + ", ".join(f"{s} {v:,.0f}" for s, v in rates.items()),
                  flush=True)
        return results, {w.spec: w.info for w in workers}
    finally:
        for w in workers:
            w.close()
