"""The targets of issue 26 (MLPerf DLRM-DCNv2 on one 24 GiB CPU machine),
measured by examples/dlrm_scale.py at full and at 1/1000 cardinalities.

    python benchmarks/bench_mlperf_scale.py --steps 8              # runs both
    python benchmarks/bench_mlperf_scale.py --full runs/full.json \\
        --small runs/small.json                                    # prints only
    python benchmarks/bench_mlperf_scale.py --sizing               # hosts table

Targets (MD "table" at 1/16, same batch, bags and optimizer at both sizes):
everything the model holds at most 8 GiB; every phase's peak RSS at most
1.5x that plus 3 GiB; examples/s at full size at least 0.9x that at 1/1000;
plan + build at most 5 min; `.keras` save and load (the resume) at most
5 min each; export at most 10 min; the C API's load and first answer at
most 5 min; serving p50 at batch 1 and 512 with the ops per model.
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

from common.runner import run_example  # noqa: E402

GIB = 2**30
MINUTE = 60.0


def targets(full, small):
    """`(name, measured, limit, met)` rows of the issue's targets."""
    total = full["bytes"]["total"]
    phases = full["phases"]
    rows = [("model bytes (GiB)", total / GIB, 8.0, total <= 8 * GIB)]
    rss_limit = 1.5 * total + 3 * GIB
    for name, phase in phases.items():
        rows.append((f"peak RSS {name} (GiB)", phase["peak_rss_bytes"] / GIB,
                     rss_limit / GIB, phase["peak_rss_bytes"] <= rss_limit))
    # the first half of the steps: a --stop-after train run has only those
    ratio = (full["examples_per_second_first_half"]
             / small["examples_per_second_first_half"])
    rows.append(("examples/s full / (1/1000)", ratio, 0.9, ratio >= 0.9))
    plan_build = phases["plan"]["seconds"] + phases["build"]["seconds"]
    rows.append(("plan + build (min)", plan_build / MINUTE, 5.0, plan_build <= 5 * MINUTE))
    for name, label, limit in (("save", ".keras save", 5), ("resume", ".keras load", 5),
                               ("export", "export", 10)):
        if name in phases:
            seconds = phases[name]["seconds"]
            rows.append((f"{label} (min)", seconds / MINUTE, limit,
                         seconds <= limit * MINUTE))
    serving = full.get("serving")
    if serving:
        first = serving["load_and_first_answer_seconds"]
        rows.append(("C API load + first answer (min)", first / MINUTE, 5.0,
                     first <= 5 * MINUTE))
    return rows


def sizing_markdown():
    """docs/scale.md's table of hosts needed (keras_mixed_dim.models.scale)."""
    from keras_mixed_dim.models.presets import get_preset
    from keras_mixed_dim.models.scale import HOST_SIZES_GIB
    from keras_mixed_dim.models.scale import sizing_table

    config = get_preset("mlperf-dcnv2")
    hosts = " | ".join(f"{h} GiB hosts" for h in HOST_SIZES_GIB)
    lines = [f"| kind | budget | training GiB | {hosts} |",
             "|---|---|---|" + "---|" * len(HOST_SIZES_GIB)]
    for kind, budget, gib, needed in sizing_table(config):
        cells = " | ".join("-" if n is None else str(n) for n in needed)
        lines.append(f"| {kind} | {budget} | {gib:.1f} | {cells} |")
    return "\n".join(lines)


def run(scale, args, out=None):
    argv = ["--scale", scale, "--embedding", args.embedding,
            "--budget-fraction", args.budget_fraction, "--steps", args.steps,
            "--batch-size", args.batch_size, "--verbose", "0"]
    if out:
        argv += ["--out", out]
    return run_example("dlrm_scale.py", argv)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", help="results JSON of a full-size run (else run it)")
    parser.add_argument("--small", help="results JSON of the 1/1000 run (else run it)")
    parser.add_argument("--scale", type=float, default=1,
                        help="the 'full' run's scale (1; 10 for a rehearsal)")
    parser.add_argument("--embedding", default="table")
    parser.add_argument("--budget-fraction", default="1/16")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--sizing", action="store_true",
                        help="print the hosts-needed table of docs/scale.md and stop")
    args = parser.parse_args(argv)
    if args.sizing:
        print(sizing_markdown())
        return
    full = (json.loads(pathlib.Path(args.full).read_text()) if args.full
            else run(args.scale, args))
    small = (json.loads(pathlib.Path(args.small).read_text()) if args.small
             else run(args.scale * 1000, args))
    for results in (full, small):
        if results["batch_size"] != full["batch_size"] or (
                results["bag_sizes"] != full["bag_sizes"]):
            sys.exit("error: the two runs differ in batch size or bags")
    # results written before 0.3 name the fraction "budget"
    fraction = full.get("budget_fraction", full.get("budget"))
    print(f"{full['preset']} 1/{full['scale']:g} vs 1/{small['scale']:g}: "
          f"{full['embedding']} at {fraction}, batch {full['batch_size']}, "
          f"{full['steps']} steps")
    print(f"{'target':<34} {'measured':>10} {'limit':>8}")
    for name, measured, limit, met in targets(full, small):
        print(f"{name:<34} {measured:10.3f} {limit:8.2f}  {'met' if met else 'MISSED'}")
    print("bytes: " + ", ".join(f"{k} {v / GIB:.3f} GiB" for k, v in full["bytes"].items()))
    print(f"examples/s: {full['examples_per_second_first_half']:,.0f} (full), "
          f"{small['examples_per_second_first_half']:,.0f} (1/{small['scale']:g})")
    serving = full.get("serving")
    if serving:
        for batch, latency in serving["latency"].items():
            print(f"serving p50 at batch {batch}: {latency['p50_ms']:.2f} ms "
                  f"(p99 {latency['p99_ms']:.2f} ms), {full['ops_per_model']} ops "
                  "per model")


if __name__ == "__main__":
    main()
