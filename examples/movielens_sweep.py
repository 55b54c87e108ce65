"""Sweep uniform dims and mixed-dimension alphas over parameter budgets.

Writes one CSV row per run and a PNG of test MSE against embedding
parameters, one line per method (as in Fig. 3 of arXiv:1909.11810).

    python examples/movielens_sweep.py --data ../shared/data/movielens/ml-100k \\
        --budgets 1 2 4 8 16 --alphas 0.2 0.4 --seeds 0 1 2 --out runs/ml100k
"""

import argparse
import csv
import io
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from common.runner import ExampleFailed  # noqa: E402
from common.runner import run_example  # noqa: E402
from keras_mixed_dim.io_utils import atomic_write_text  # noqa: E402

FIELDS = [
    "method", "alpha", "params_per_id", "seed", "embedding_params",
    "test_mse", "test_rmse", "val_mse", "epochs_run", "wall_seconds",
]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--budgets", type=float, nargs="+", default=[1, 2, 4, 8, 16],
                        help="embedding parameters per id")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/movielens_sweep",
                        help="writes OUT.csv and OUT.png")
    args, passthrough = parser.parse_known_args()
    rows = []
    for seed in args.seeds:
        for budget in args.budgets:
            methods = [("uniform", None)] + [("mixed", a) for a in args.alphas]
            for method, alpha in methods:
                argv = passthrough + [
                    "--embedding", method, "--params-per-id", str(budget),
                    "--seed", str(seed), "--verbose", "0",
                ]
                if alpha is not None:
                    argv += ["--alpha", str(alpha)]
                try:
                    result = run_example("movielens.py", argv)
                except ExampleFailed as error:
                    # e.g. a budget below one column per id plus projections
                    print(f"skipped {method} a={alpha} at {budget}/id: {error}")
                    continue
                row = {
                    "method": method if alpha is None else f"mixed a={alpha}",
                    "alpha": alpha,
                    "params_per_id": budget,
                    "seed": seed,
                    "embedding_params": result["embedding_params"],
                    "test_mse": result["mse"]["test"],
                    "test_rmse": result["rmse"]["test"],
                    "val_mse": result["mse"]["val"],
                    "epochs_run": result["epochs_run"],
                    "wall_seconds": round(result["wall_seconds"], 1),
                }
                rows.append(row)
                print(", ".join(f"{k}={row[k]}" for k in FIELDS), flush=True)
                write_csv(f"{args.out}.csv", rows)
    print_table(rows)
    plot(rows, f"{args.out}.png")


def write_csv(path, rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def aggregate(rows):
    """(method, params_per_id) -> (mean params, mean test MSE, std, n)."""
    groups = {}
    for row in rows:
        groups.setdefault((row["method"], row["params_per_id"]), []).append(row)
    return {
        key: (
            float(np.mean([r["embedding_params"] for r in group])),
            float(np.mean([r["test_mse"] for r in group])),
            float(np.std([r["test_mse"] for r in group])),
            len(group),
        )
        for key, group in sorted(groups.items())
    }


def print_table(rows):
    print(f"\n{'method':>14} {'params/id':>9} {'emb params':>11} "
          f"{'test MSE':>9} {'std':>7} {'RMSE':>7} {'seeds':>5}")
    for (method, budget), (params, mean, std, n) in aggregate(rows).items():
        print(f"{method:>14} {budget:>9g} {params:>11,.0f} {mean:>9.4f} {std:>7.4f} "
              f"{np.sqrt(mean):>7.4f} {n:>5}")


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    table = aggregate(rows)
    for method in sorted({m for m, _ in table}):
        points = sorted(v for (m, _), v in table.items() if m == method)
        axes.errorbar([p[0] for p in points], [p[1] for p in points],
                      yerr=[p[2] for p in points], marker="o", capsize=3, label=method)
    axes.set_xscale("log")
    axes.set_xlabel("embedding parameters")
    axes.set_ylabel("test MSE")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    temporary = pathlib.Path(path).with_name(f".{pathlib.Path(path).name}.partial.png")
    figure.savefig(temporary, dpi=120)
    os.replace(temporary, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
