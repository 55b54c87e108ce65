"""Where a DLRM training step's time goes, and how much of it the embeddings take.

The model is `examples/criteo.py`'s (Kaggle cardinalities x `--scale`, batch
2048, one id per feature, SGD 0.1 with `SparseRowOptimizer` on the tables,
AUC / log loss / accuracy metrics, `model.fit`), as
`benchmarks/bench_vs_reference.py` times it against facebookresearch/dlrm.
Two parts:

* `share` (any backend): the step of the uniform and the MD model against
  the same model with the embedding layer's output fed in as an input of
  the same shape (`none`: the same MLPs, interaction, loss, metrics and
  optimizer, no tables). `(T_kind - T_none) / T_kind` is the share of the
  step that the embeddings take (lookups, their backward, the row updates,
  MD's projections), and `T_uniform / T_none` is the most MD / uniform can
  reach on this machine however cheap MD's tables were: the ceiling of the
  target "MD at least 1.2x uniform". The three models live in one process
  and time their steps in turns, round after round (order reversed every
  other round), so every ratio is taken seconds apart.
* `breakdown` (JAX only; with `--trace` also each part of the model's share
  of the compiled step's op time, from the profiler): `model.fit` per step against the jitted train step
  alone (the difference is host work: slicing and moving batches,
  dispatch, callbacks), the forward pass, the row step's gradients, the
  optimizer's update and the metrics, each jitted on its own, for the
  uniform and the MD model; and the compiled step's memory: `alias` is what
  the step updates in place (the donated state; the tables' bytes must be
  in it, or a table is copied every step), `temp` its scratch, and its
  sorts, scatters and gathers.

    python benchmarks/bench_step_breakdown.py                      # TensorFlow: share
    KERAS_BACKEND=jax python benchmarks/bench_step_breakdown.py    # JAX: both parts
    KERAS_BACKEND=jax python benchmarks/bench_step_breakdown.py --parts breakdown --scale 0.1

At `--scale 1` a uniform model holds 2 GiB of tables; `share` holds a uniform
and an MD model at once.
"""

import argparse
import collections
import glob
import os
import re
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "--trace" in sys.argv:
    # XLA's CPU ops report to the profiler only when asked before JAX starts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_enable_xprof_traceme=true").strip()

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE), "examples"), os.path.dirname(HERE)]

import keras  # noqa: E402
import numpy as np  # noqa: E402

import criteo  # noqa: E402 (examples/criteo.py)
from common.metering import ThroughputMeter  # noqa: E402
from keras_mixed_dim import backend  # noqa: E402
from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES  # noqa: E402
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo  # noqa: E402
from keras_mixed_dim.layers.dot_interaction import DotInteraction  # noqa: E402
from keras_mixed_dim.models.id_safe import IdSafeModel  # noqa: E402
from timed_fit import BATCH, BOTTOM, DIM, LR, TOP, fit_timed  # noqa: E402

KINDS = {"uniform": "uniform", "md": "table"}


def criteo_model(kind, layout, cardinalities):
    """`examples/criteo.py --optimizer sgd --lr 0.1 --batch-size 2048
    --embedding {uniform,table}` with the given layout."""
    argv = ["--optimizer", "sgd", "--lr", str(LR), "--batch-size", str(BATCH),
            "--embedding", KINDS[kind]]
    argv += {"stacked": ["--stacked"], "per_feature": ["--per-feature"],
             "default": []}[layout]
    model, _ = criteo.build_model(criteo.parse_args(argv), list(cardinalities), None)
    return model


def no_embedding_model(num_features):
    """`dlrm`'s model with the embedding vectors `(batch, F, DIM)` as an input
    (input "vectors"), compiled as `criteo_model` compiles it."""
    dense = keras.Input((13,), dtype="float32", name="dense")
    vectors = keras.Input((num_features, DIM), dtype="float32", name="vectors")
    x = dense
    for i, width in enumerate((*BOTTOM, DIM)):
        x = keras.layers.Dense(width, activation="relu", name=f"bottom_{i}")(x)
    features = [x] + keras.ops.unstack(vectors, num=num_features, axis=1)
    z = keras.layers.Concatenate(name="top_input")(
        [x, DotInteraction(name="interaction")(features)])
    for i, width in enumerate(TOP):
        z = keras.layers.Dense(width, activation="relu", name=f"top_{i}")(z)
    output = keras.layers.Dense(1, activation="sigmoid", name="probability")(z)
    model = IdSafeModel({"dense": dense, "vectors": vectors}, output, name="dlrm_none")
    _, optimizer = criteo.make_optimizer("sgd", LR, model=model)
    model.compile(optimizer=optimizer, loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc"),
                           keras.metrics.BinaryCrossentropy(name="logloss"),
                           keras.metrics.BinaryAccuracy(name="accuracy")])
    return model


class Timed:
    """A compiled model and its rows, timed by `model.fit` as
    `bench_vs_reference.py` times it (each fit's first batch left out)."""

    def __init__(self, model, x, y):
        self.model, self.x, self.y = model, x, y
        self.meter = ThroughputMeter(BATCH)
        self.run(2)  # tracing and compiling

    def run(self, steps):
        batches, seconds = fit_timed(self.model, self.x, self.y, self.meter, steps)
        return seconds / batches * 1e3


def share(cardinalities, layout, rounds, steps):
    """Prints the embeddings' share of the step and the MD / uniform ceiling."""
    dense, categorical, labels = SyntheticCriteo(
        BATCH * (steps + 1), cardinalities, seed=0).arrays()
    vectors = np.random.default_rng(0).normal(
        0, 0.1, (len(labels), len(cardinalities), DIM)).astype("float32")
    timed = {}
    for kind in ("uniform", "md"):
        keras.utils.set_random_seed(0)
        timed[kind] = Timed(criteo_model(kind, layout, cardinalities),
                            {"dense": dense, "categorical": categorical}, labels)
    keras.utils.set_random_seed(0)
    timed["none"] = Timed(no_embedding_model(len(cardinalities)),
                          {"dense": dense, "vectors": vectors}, labels)
    print(f"# share: layout {layout}, {steps} steps a turn, {rounds} rounds "
          f"(ms per step)", flush=True)
    runs = []
    for r in range(rounds):
        order = list(timed) if r % 2 == 0 else list(timed)[::-1]
        runs.append({name: timed[name].run(steps) for name in order})
        print(f"#   round {r}: " + ", ".join(f"{k} {v:.1f}" for k, v in runs[-1].items())
              + f"; load average {os.getloadavg()[0]:.1f}", flush=True)

    def ratios(fn):
        values = [fn(run) for run in runs]
        return (f"{statistics.median(values):.2f} ({min(values):.2f} to "
                f"{max(values):.2f})")

    print(f"{'model':>8} {'ms/step (median)':>17} {'embeddings share (median, min to max)':>40}")
    for name in timed:
        median = statistics.median(run[name] for run in runs)
        line = f"{name:>8} {median:>17.1f}"
        if name != "none":
            line += f" {ratios(lambda run: 1 - run['none'] / run[name]):>40}"
        print(line)
    print(f"MD / uniform examples/s: {ratios(lambda run: run['uniform'] / run['md'])}")
    print("ceiling of MD / uniform (uniform / none, MD's embeddings free): "
          f"{ratios(lambda run: run['uniform'] / run['none'])}")
    print("MD's embeddings' time / uniform's: "
          f"{ratios(lambda run: (run['md'] - run['none']) / (run['uniform'] - run['none']))}")


def _milliseconds(fn, iters):
    import jax

    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(iters):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / iters * 1e3


def _op_time_by_part(run, hlo, iters):
    """Runs `run` `iters` times under the profiler and prints the compiled
    step's op time per part of the model (the ops' `op_name`: a layer, its
    backward `transpose(jvp(...))`, the optimizer)."""
    import tempfile

    import jax
    from jax._src.profiler import ProfileData

    names = dict(re.findall(r'%([\w.\-]+) = [^\n]*?metadata=\{op_name="([^"]+)"', hlo))
    jax.block_until_ready(run())
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        for _ in range(iters):
            out = run()
        jax.block_until_ready(out)
        jax.profiler.stop_trace()
        path = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)[0]
        data = ProfileData.from_file(path)
        parts = collections.Counter()
        for plane in data.planes:
            for line in plane.lines:
                if "XLAEigen" not in line.name:  # XLA's CPU op threads
                    continue
                for event in line.events:
                    if event.name.startswith("end:") or "Thunk" in event.name:
                        continue
                    op_name = names.get(event.name)
                    if op_name is None:
                        part = re.sub(r"\.\d+$", "", event.name)
                    else:
                        # e.g. jit(train_step)/transpose(jvp(interaction))/dot_general
                        part = "/".join(p for p in op_name.split("/")[1:-1]
                                        if not p.startswith("jit(")) or op_name
                    parts[part] += event.duration_ns
    total = sum(parts.values())
    print(f"  op time {total / iters / 1e6:.1f} ms per step, by part:")
    for part, ns in parts.most_common(16):
        print(f"  {ns / iters / 1e6:8.2f} ms {100 * ns / total:5.1f}%  {part}")


def breakdown(cardinalities, layout, rounds, iters, trace=False):
    """Prints where the JAX step's time goes, per kind."""
    dense, categorical, labels = SyntheticCriteo(
        BATCH * (iters + 1), cardinalities, seed=0).arrays()
    for kind in ("uniform", "md"):
        keras.utils.set_random_seed(0)
        _breakdown_kind(kind, layout, cardinalities, dense, categorical, labels, rounds,
                        iters, trace)
        keras.backend.clear_session()


def _breakdown_kind(kind, layout, cardinalities, dense, categorical, labels, rounds,
                    iters, trace):
    import jax
    import jax.numpy as jnp

    from keras_mixed_dim.backend.row_gradients import RowGradient
    from keras_mixed_dim.optimizers import sparse_row_value_and_grad

    model = criteo_model(kind, layout, cardinalities)
    timed = Timed(model, {"dense": dense, "categorical": categorical}, labels)
    x = {"dense": jnp.asarray(dense[:BATCH]),
         "categorical": jnp.asarray(categorical[:BATCH].astype("int32"))}
    y = jnp.asarray(labels[:BATCH])
    groups = (model.trainable_variables, model.non_trainable_variables,
              model.optimizer.variables, model.metrics_variables)
    state = tuple([v.value for v in variables] for variables in groups)
    tables = sum(int(np.prod(v.shape)) * 4 for v in model.optimizer.table_variables)
    # `fit`'s own jit of the step (donated state), compiled ahead
    compiled = jax.jit(model.train_step, donate_argnums=0).lower(state, (x, y)).compile()
    memory = compiled.memory_analysis()
    hlo = compiled.as_text()
    counts = {op: len(re.findall(rf"\b{op}\(", hlo))
              for op in ("sort", "scatter", "gather", "copy")}
    forward = jax.jit(lambda t, n: model.stateless_call(t, n, x, training=True)[0])

    def gradients(t, n, o, m):
        (loss, _), grads = sparse_row_value_and_grad(model)(
            t, n, m, x, y, None, training=True, optimizer_variables=o)
        return loss, [(g.indices, g.values, g.dense) if isinstance(g, RowGradient)
                      else g for g in grads]

    gradients = jax.jit(gradients)
    grads = gradients(*state)[1]

    def apply(t, o):
        return model.optimizer.stateless_apply(
            o, [RowGradient(*g) if isinstance(g, tuple) else g for g in grads], t)

    apply = jax.jit(apply, donate_argnums=(0, 1))
    predictions = forward(state[0], state[1])
    metrics = jax.jit(lambda m: model._update_metrics_variables(
        m, jnp.float32(0.5), x, y, predictions, None))
    # the parts below donate the state: `current` holds its live arrays
    current = {"state": state}

    def step():
        logs, current["state"] = compiled(current["state"], (x, y))
        return logs

    def update():
        t, n, o, m = current["state"]
        t, o = apply(t, o)
        current["state"] = (t, n, o, m)
        return t

    def fit():
        for variables, values in zip(groups, current["state"]):
            for variable, value in zip(variables, values):
                variable.assign(value)
        milliseconds = timed.run(iters)
        current["state"] = tuple([v.value for v in variables] for variables in groups)
        return milliseconds

    parts = {
        "fit": fit,
        "step": lambda: _milliseconds(step, iters),
        "forward": lambda: _milliseconds(
            lambda: forward(*current["state"][:2]), iters),
        "gradients": lambda: _milliseconds(
            lambda: gradients(*current["state"]), iters),
        "update": lambda: _milliseconds(update, iters),
        "metrics": lambda: _milliseconds(
            lambda: metrics(current["state"][3]), iters),
    }
    runs = []
    for r in range(rounds):
        order = list(parts) if r % 2 == 0 else list(parts)[::-1]
        runs.append({name: parts[name]() for name in order})
    times = {name: statistics.median(run[name] for run in runs) for name in parts}
    host = statistics.median(run["fit"] - run["step"] for run in runs)
    print(f"{kind} {layout}: fit {times['fit']:.1f} ms/step, jitted step "
          f"{times['step']:.1f} ms (host {host:+.1f} ms); alone: "
          + ", ".join(f"{k} {times[k]:.1f} ms"
                      for k in ("forward", "gradients", "update", "metrics")), flush=True)
    print(f"{kind} {layout}: tables {tables / 2**20:.0f} MiB, step memory: donated "
          f"and updated in place {memory.alias_size_in_bytes / 2**20:.0f} MiB, "
          f"scratch {memory.temp_size_in_bytes / 2**20:.0f} MiB; ops: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
    if trace:
        _op_time_by_part(step, hlo, iters)
    for variables, values in zip(groups, current["state"]):
        for variable, value in zip(variables, values):
            variable.assign(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="Kaggle cardinalities times this")
    parser.add_argument("--layout", default="default",
                        choices=("default", "stacked", "per_feature"))
    parser.add_argument("--parts", nargs="+", choices=("share", "breakdown"),
                        help="default: share, and breakdown on JAX")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8, help="timed steps a turn")
    parser.add_argument("--trace", action="store_true",
                        help="breakdown: also the op time per part of the model")
    args = parser.parse_args()
    parts = args.parts or (["share", "breakdown"] if backend.NAME == "jax" else ["share"])
    if "breakdown" in parts and backend.NAME != "jax":
        parser.error("--parts breakdown needs KERAS_BACKEND=jax")
    cardinalities = [max(1, int(round(c * args.scale))) for c in KAGGLE_CARDINALITIES]
    print(f"# DLRM, {backend.NAME}, {sum(cardinalities):,} ids, batch {BATCH}, SGD lr "
          f"{LR}; {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
          f", load average {os.getloadavg()[0]:.1f}", flush=True)
    if "breakdown" in parts:
        breakdown(cardinalities, args.layout, args.rounds, args.steps, args.trace)
    if "share" in parts:
        share(cardinalities, args.layout, args.rounds, args.steps)


if __name__ == "__main__":
    main()
