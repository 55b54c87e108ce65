"""DLRM at full Kaggle cardinalities: uniform d=16 vs per-table MD (alpha 0.3),
training examples per second and peak accelerator memory.

Each (mode, batch) runs `examples/criteo.py` in its own process, so each peak
memory figure belongs to one model. Made for the JAX backend on a GPU (no
TensorFlow needed); it runs on CPU too, where peak device memory is n/a.

    KERAS_BACKEND=jax python benchmarks/bench_gpu_criteo.py --out runs/gpu
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "criteo.py"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_500_000,
                        help="synthetic rows (90%% train, 10%% validation)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--modes", nargs="+", default=["uniform", "table"])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--cardinality-scale", type=float, default=1.0)
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--out", default="runs/gpu_criteo",
                        help="folder for one results JSON per run")
    return parser.parse_args(argv)


def run_one(args, mode, batch_size):
    out = pathlib.Path(args.out) / f"{mode}-b{batch_size}.json"
    command = [
        sys.executable, str(EXAMPLE),
        "--embedding", mode, "--dim", str(args.dim), "--alpha", str(args.alpha),
        "--cardinality-scale", str(args.cardinality_scale),
        "--synthetic-rows", str(args.rows), "--batch-size", str(batch_size),
        "--steps-per-execution", str(args.steps_per_execution),
        "--verbose", "0", "--results-json", str(out),
    ]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=os.environ.copy())
    return json.loads(out.read_text())


def mib(num_bytes):
    return "n/a" if num_bytes is None else f"{num_bytes / 2**20:,.0f}"


def main(argv=None):
    args = parse_args(argv)
    pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
    rows = []
    for batch_size in args.batch_sizes:
        for mode in args.modes:
            result = run_one(args, mode, batch_size)
            rows.append((mode, batch_size, result))
            print(f"  {mode} b{batch_size}: {result['train_examples_per_second']:,.0f} "
                  f"examples/s, peak device {mib(result['device_peak_bytes'])} MiB",
                  flush=True)
    first = rows[0][2]
    print(f"\n# backend {first['backend']}, device {first['device']}, "
          f"{sum(first['cardinalities']):,} ids, {args.rows:,} rows, Adam, 1 epoch")
    print(f"{'mode':>8} {'batch':>6} {'emb params':>12} {'examples/s':>11} "
          f"{'vs uniform':>10} {'peak dev MiB':>12} {'host MiB':>9} {'val AUC':>8}")
    uniform = {b: r["train_examples_per_second"] for m, b, r in rows if m == "uniform"}
    for mode, batch_size, r in rows:
        rate = r["train_examples_per_second"]
        ratio = f"{rate / uniform[batch_size]:.2f}x" if batch_size in uniform else "-"
        print(f"{mode:>8} {batch_size:>6} {r['embedding_params']:>12,} {rate:>11,.0f} "
              f"{ratio:>10} {mib(r['device_peak_bytes']):>12} "
              f"{mib(r['host_peak_bytes']):>9} {r['val']['auc']:>8.4f}")


if __name__ == "__main__":
    main()
