"""The mlperf-dcnv2 preset with uniform tables, rows sharded over 1, 2 and
4 JAX processes on this host (jax.distributed on CPU, gloo collectives, as
N hosts would run it): each process's table bytes, peak RSS and examples/s.

    python benchmarks/bench_jax_processes.py --scale 100 --steps 4 --batch 512

Runs tests/programs/jax_multiprocess_dlrm.py once per process. Processes
share this host's cores, so examples/s here shows the cost of the
collectives, not a speed-up; the tables' share per process falls as 1/N.
"""

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "tests" / "programs" / "jax_multiprocess_dlrm.py"
MIB = 2**20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(processes, args):
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")]))}
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen(
        [sys.executable, str(PROGRAM), str(i), str(processes), str(port),
         str(args.steps), str(args.scale), str(args.batch), "1" if args.narrow else "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(processes)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"error: a process failed:\n{stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=100)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--narrow", action="store_true",
                        help="small MLPs and cross layers (the test's model)")
    args = parser.parse_args(argv)
    print(f"mlperf-dcnv2 1/{args.scale:g}, uniform tables, batch {args.batch}, "
          f"{args.steps} steps")
    print(f"{'N':>2} {'process':>7} {'tables MiB':>11} {'of all':>7} "
          f"{'peak RSS MiB':>13} {'examples/s':>11} {'last loss':>10}")
    for n in args.processes:
        for out in run(n, args):
            print(f"{n:>2} {out['process']:>7} {out['table_bytes'] / MIB:11.1f} "
                  f"{out['table_bytes'] / out['all_table_bytes']:7.3f} "
                  f"{out['peak_rss_bytes'] / MIB:13.0f} "
                  f"{out['examples_per_second'] or float('nan'):11.1f} "
                  f"{out['losses'][-1]:10.5f}", flush=True)


if __name__ == "__main__":
    main()
