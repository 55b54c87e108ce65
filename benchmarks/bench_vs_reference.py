"""DLRM training throughput against facebookresearch/dlrm, interleaved in one run.

Every configuration runs in its own worker process that builds its model,
warms it up, then waits; the parent has the workers of a group time a few
steps each in turn, round after round (the order reversed every other round,
so a drift of the shared machine's load falls on both sides of a pair), and
takes every ratio within a round: each ratio below is the median over the
rounds of two measurements made seconds apart, so the ratios hold on a busy
machine where absolute examples/s do not.

    python benchmarks/bench_vs_reference.py --reference /path/to/facebookresearch/dlrm
    python benchmarks/bench_vs_reference.py --reference DIR --groups md --rounds 5

Same model and data on both sides: the full Criteo Kaggle cardinalities
(26 tables, 33,762,577 ids), batch 2048, one id per feature, bottom MLP
13-512-256-64-16, top MLP 512-256-1, dot interaction, binary cross-entropy,
SGD with learning rate 0.1 on everything, the same `SyntheticCriteo` rows.

* `ref/md`, `ref/uniform`: the reference's `DLRM_Net` from its
  `dlrm_s_pytorch.py` (PyTorch CPU, `EmbeddingBag(sparse=True)`, its
  `PrEmbeddingBag` and `md_solver` with alpha 0.3 for MD, every table mixed
  as `--md-threshold=0`), trained by its own loop's statements (forward,
  loss to the host, `zero_grad`, backward, `optimizer.step`).
* `tf/...`, `jax/...`: this package's model exactly as `examples/criteo.py
  --cardinality-scale 1 --optimizer sgd --lr 0.1 --batch-size 2048` builds it
  (`SparseRowOptimizer` on the tables, AUC / log loss / accuracy metrics,
  `model.fit`), `--embedding table` for `md`, `--embedding uniform` for
  `uniform`; the layout is `stacked`, `per_feature` or `default` (what
  `dlrm(stacked=None)` picks).

Each ratio prints beside its target from issue 22 with met / missed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interleaved  # noqa: E402  (benchmarks/interleaved.py)
from timed_fit import BATCH, BOTTOM, DIM, LR, TOP, fit_timed  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Groups of workers alive at the same time (memory: a uniform model holds
# 2 GiB of tables, and its worker peaks at 7 GiB on TensorFlow, 9 GiB on
# JAX while it starts); every target's two sides share a group. The
# `default` layout is the one `dlrm(stacked=None)` picks.
GROUPS = {
    "md": ["ref/md", "tf/md/stacked", "tf/md/per_feature", "jax/md/stacked",
           "jax/md/per_feature"],
    "tf-uniform": ["ref/uniform", "tf/uniform/default", "tf/md/default"],
    "jax-uniform": ["ref/uniform", "jax/uniform/default", "jax/md/default"],
    "tf-layouts": ["tf/uniform/stacked", "tf/uniform/per_feature"],
    "jax-layouts": ["jax/uniform/stacked", "jax/uniform/per_feature"],
}
DEFAULT_GROUPS = ["md", "tf-uniform", "jax-uniform", "tf-layouts"]

# (label, numerator, denominator, minimum ratio or None, maximum or None)
TARGETS = [
    ("TF MD / ref MD", "tf/md/default", "ref/md", 1.25, None),
    ("TF uniform / ref uniform", "tf/uniform/default", "ref/uniform", 0.8, None),
    ("TF MD / TF uniform", "tf/md/default", "tf/uniform/default", 1.2, None),
    ("JAX / TF step, MD stacked", "jax/md/stacked", "tf/md/stacked", None, 1.1),
    ("JAX / TF step, MD per feature", "jax/md/per_feature", "tf/md/per_feature",
     None, 1.1),
    ("JAX MD / ref MD", "jax/md/default", "ref/md", 1.25, None),
    ("JAX uniform / ref uniform", "jax/uniform/default", "ref/uniform", 0.8, None),
    ("JAX MD / JAX uniform", "jax/md/default", "jax/uniform/default", None, None),
    ("TF MD stacked / per feature", "tf/md/stacked", "tf/md/per_feature", 1.0, None),
    ("JAX MD stacked / per feature", "jax/md/stacked", "jax/md/per_feature", 1.0, None),
    ("TF MD stacked / ref MD", "tf/md/stacked", "ref/md", None, None),
    ("TF MD per feature / ref MD", "tf/md/per_feature", "ref/md", None, None),
    ("JAX MD stacked / ref MD", "jax/md/stacked", "ref/md", None, None),
    ("JAX MD per feature / ref MD", "jax/md/per_feature", "ref/md", None, None),
    ("TF uniform stacked / per feature", "tf/uniform/stacked", "tf/uniform/per_feature",
     None, None),
    ("JAX uniform stacked / per feature", "jax/uniform/stacked",
     "jax/uniform/per_feature", None, None),
]


DATA_STEPS = 32


def make_data(path):
    """The rows every worker trains on, written once (the reference's worker
    then never imports Keras or TensorFlow)."""
    import numpy as np

    from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES
    from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo

    dense, categorical, labels = SyntheticCriteo(
        BATCH * DATA_STEPS, list(KAGGLE_CARDINALITIES), seed=0).arrays()
    np.savez(path, dense=dense, categorical=categorical, labels=labels,
             cardinalities=np.array(KAGGLE_CARDINALITIES))


def load_data(path):
    import numpy as np

    with np.load(path) as data:
        return {k: data[k] for k in data.files}


class ReferenceWorker:
    """facebookresearch/dlrm's model and training statements, on our rows."""

    def __init__(self, directory, mode, data):
        import numpy as np
        import torch

        sys.path[:0] = [os.path.join(HERE, "_reference_stubs"), directory]

        from run_reference import install_stubs  # _reference_stubs, above

        install_stubs()
        import dlrm_s_pytorch as reference  # noqa: E402 (its checkout, above)

        reference.ext_dist.my_size, reference.ext_dist.my_rank = 1, 0
        np.random.seed(0)
        torch.manual_seed(0)
        ln_emb = np.array(data["cardinalities"])
        m_spa = DIM
        if mode == "md":
            # as its main() does for --md-flag --md-temperature=0.3
            m_spa = reference.md_solver(torch.tensor(ln_emb), 0.3, d0=DIM,
                                        round_dim=False).tolist()
        ln_bot = np.array([13, *BOTTOM, DIM])
        num_int = len(ln_emb) * (len(ln_emb) + 1) // 2 + DIM
        ln_top = np.array([num_int, *TOP, 1])
        self.model = reference.DLRM_Net(
            m_spa, ln_emb, ln_bot, ln_top, arch_interaction_op="dot",
            arch_interaction_itself=False, sigmoid_bot=-1, sigmoid_top=ln_top.size - 2,
            sync_dense_params=True, loss_threshold=0.0, ndevices=-1,
            md_flag=mode == "md", md_threshold=0, loss_function="bce")
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)
        dense, categorical, labels = data["dense"], data["categorical"], data["labels"]
        self.batches = []
        offsets = torch.arange(BATCH, dtype=torch.int64)
        for b in range(DATA_STEPS):
            rows = slice(b * BATCH, (b + 1) * BATCH)
            self.batches.append((
                torch.tensor(dense[rows]),
                [offsets] * len(ln_emb),
                [torch.tensor(categorical[rows, k].astype("int64"))
                 for k in range(len(ln_emb))],
                torch.tensor(labels[rows].reshape(-1, 1).astype("float32"))))
        self.torch = torch
        self.run(3)

    def run(self, steps):
        start = time.perf_counter()
        for j in range(steps):
            x, offsets, indices, target = self.batches[j % len(self.batches)]
            z = self.model(x, offsets, indices)
            loss = self.model.loss_fn(z, target)
            loss.detach().cpu().numpy()  # its loop reads the loss every step
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return steps, time.perf_counter() - start


class KerasWorker:
    """This package's DLRM as `examples/criteo.py` builds and trains it."""

    def __init__(self, mode, layout, data):
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        import criteo  # examples/criteo.py

        from common.metering import ThroughputMeter

        argv = ["--cardinality-scale", "1", "--optimizer", "sgd", "--lr", str(LR),
                "--batch-size", str(BATCH),
                "--embedding", {"md": "table", "uniform": "uniform"}[mode]]
        argv += {"stacked": ["--stacked"], "per_feature": ["--per-feature"],
                 "default": []}[layout]
        args = criteo.parse_args(argv)
        import keras

        keras.utils.set_random_seed(0)
        self.model, _ = criteo.build_model(
            args, [int(c) for c in data["cardinalities"]], None)
        self.layout = ("stacked" if any(type(l).__name__ == "StackedEmbedding"
                                         for l in self.model.layers) else "per_feature")
        self.x = {"dense": data["dense"], "categorical": data["categorical"]}
        self.y = data["labels"]
        self.meter = ThroughputMeter(BATCH)
        self.run(3)

    def run(self, steps):
        return fit_timed(self.model, self.x, self.y, self.meter, steps)


def worker(spec, reference, data_path):
    backend = spec.split("/")[0]
    data = load_data(data_path)
    if backend == "ref":
        state = ReferenceWorker(reference, spec.split("/")[1], data)
        extra = {}
    else:
        _, mode, layout = spec.split("/")
        state = KerasWorker(mode, layout, data)
        extra = {"layout": state.layout}
    interleaved.serve(state, **extra)


def run_group(name, specs, args, data_path, log):
    print(f"# group {name}: starting {', '.join(specs)}", flush=True)

    def command(spec):
        return ([sys.executable, os.path.abspath(__file__), "--worker", spec,
                 "--data", data_path]
                + (["--reference", args.reference] if args.reference else []))

    return interleaved.take_turns(
        specs, command, BATCH, args.rounds, args.steps, log,
        describe=lambda info: f", layout {info['layout']}" if "layout" in info else "")

def report(results):
    """Prints each configuration's examples/s and every target's ratio.

    `results`: `{group: (rounds, workers)}`. A `.../default` side of a
    target missing from every group is read as the layout its worker
    reported (`tf/md/default` is `tf/md/stacked` where that is the
    default), so the md group's rows count for it too.
    """
    print(f"\n{'configuration (group)':>36} {'examples/s median':>18} {'min':>8} {'max':>8}")
    defaults = {}
    for name, (rounds, info) in results.items():
        for spec in rounds[0]:
            values = [r[spec] for r in rounds]
            layout = info[spec].get("layout")
            if spec.endswith("/default"):
                defaults[spec] = spec[:-len("default")] + layout
            label = f"{spec}{' -> ' + layout if spec.endswith('default') else ''} ({name})"
            print(f"{label:>36} {statistics.median(values):>18,.0f} {min(values):>8,.0f} "
                  f"{max(values):>8,.0f}")
    print(f"\n{'ratio (pair by pair, median of rounds)':>40} {'median':>7} {'min':>6} "
          f"{'max':>6}  target (group)")
    for label, a, b, low, high in TARGETS:
        for a_spec, b_spec in ((a, b), (defaults.get(a, a), defaults.get(b, b))):
            found = [(name, rounds) for name, (rounds, _) in results.items()
                     if a_spec in rounds[0] and b_spec in rounds[0]]
            if found:
                break
        if not found:
            continue
        name, rounds = found[0]
        ratios = [r[a_spec] / r[b_spec] for r in rounds]
        median = statistics.median(ratios)
        target = verdict = ""
        if low is not None:
            target, verdict = f">= {low}", "met" if median >= low else "MISSED"
        if high is not None:
            target, verdict = f"<= {high}", "met" if median <= high else "MISSED"
        print(f"{label:>40} {median:>6.2f}x {min(ratios):>5.2f}x "
              f"{max(ratios):>5.2f}x  {target} {verdict} ({name})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", help="a facebookresearch/dlrm checkout")
    parser.add_argument("--groups", nargs="+", default=DEFAULT_GROUPS, choices=list(GROUPS))
    parser.add_argument("--rounds", type=int, default=5, help="ratios: median of these")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per turn")
    parser.add_argument("--log", default=os.devnull, help="the workers' stderr")
    parser.add_argument("--json", help="also write every round's figures here")
    parser.add_argument("--report", metavar="JSON",
                        help="only print the tables of a run saved with --json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--make-data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report:
        with open(args.report, encoding="utf-8") as file:
            saved = json.load(file)
        return report({g: (v["rounds"], v["workers"]) for g, v in saved.items()})
    if args.make_data:
        return make_data(args.make_data)
    if args.worker:
        return worker(args.worker, args.reference, args.data)
    groups = {g: [s for s in GROUPS[g] if args.reference or not s.startswith("ref/")]
              for g in args.groups}
    print(f"# DLRM, Kaggle cardinalities, batch {BATCH}, SGD lr {LR}; {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as folder, open(args.log, "a",
                                                        encoding="utf-8") as log:
        data_path = os.path.join(folder, "rows.npz")
        # in a process of its own: this one stays free of TensorFlow
        subprocess.run([sys.executable, os.path.abspath(__file__), "--make-data",
                        data_path], check=True, env=interleaved.environment("tf"), stderr=log)
        for name, specs in groups.items():
            results[name] = run_group(name, specs, args, data_path, log)
    report(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({g: {"rounds": r, "workers": i} for g, (r, i) in results.items()},
                      file, indent=1)


if __name__ == "__main__":
    sys.exit(main())
