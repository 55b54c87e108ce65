"""AUC against total bytes (embeddings + vocabularies) for vocabulary settings.

Writes synthetic rows in Criteo's raw TAB format (hex values), then runs the
Criteo example's full raw-data path (counting pass, ranked and bounded
vocabularies with hash buckets, tf.data, DLRM) for several vocabulary
settings and prints validation AUC beside embedding and vocabulary bytes.

    python benchmarks/bench_criteo_vocab.py --rows 300000
"""

import argparse
import os
import pathlib
import sys

# the examples' harness (not part of the package) lives beside them
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common.runner import run_example  # noqa: E402
from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES  # noqa: E402
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo  # noqa: E402

SETTINGS = [
    ("uniform", ["--min-count", "1"]),
    ("table", ["--min-count", "1"]),
    ("table_blocks", ["--min-count", "1"]),
    ("table_blocks", ["--min-count", "3"]),
    ("table_blocks", ["--min-count", "10"]),
    ("table_blocks", ["--top-k", "1000"]),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--work-dir", default="/tmp/keras_mixed_dim_vocab_bench")
    args = parser.parse_args()
    work = pathlib.Path(args.work_dir)
    data = work / f"train_{args.rows}_{args.scale}.txt"
    if not data.exists():
        cardinalities = [max(1, int(round(c * args.scale))) for c in KAGGLE_CARDINALITIES]
        SyntheticCriteo(args.rows, cardinalities, seed=0).write_raw(data)
    print(f"{args.rows:,} synthetic raw rows (cardinalities x {args.scale}), "
          f"d=16, alpha 0.3, {args.epochs} epoch(s), every 10th row validation")
    print(f"{'embedding':>9} {'vocabulary':>14} {'kept values':>11} {'emb MiB':>8} "
          f"{'vocab MiB':>9} {'total MiB':>9} {'val AUC':>8}")
    for mode, vocab_args in SETTINGS:
        name = "_".join(vocab_args).replace("--", "")
        argv = ["--data", str(data), "--vocab-dir", str(work / f"vocab_{name}"),
                "--embedding", mode, "--epochs", str(args.epochs), "--verbose", "0",
                *vocab_args]
        results = run_example("criteo.py", argv)
        kept = sum(results["cardinalities"])
        mib = 1 / 2**20
        emb, voc = results["embedding_bytes"] * mib, results["vocabulary_bytes"] * mib
        print(f"{mode:>9} {' '.join(vocab_args):>14} {kept:>11,} {emb:>8.2f} "
              f"{voc:>9.2f} {emb + voc:>9.2f} {results['val']['auc']:>8.4f}", flush=True)


if __name__ == "__main__":
    main()
