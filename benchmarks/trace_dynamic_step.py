"""Where the jitted JAX train step of `profile_dynamic_step.py`'s models goes
(JAX only), part by part.

The three models of `profile_dynamic_step.py` (ml-100k, two features, 64 KB
each, Adam): `dyn` (the row writes in the step), `dyn-noblock` (the same
layers without the writes input) and `static`. Each model's train step is
jitted as Keras's JAX trainer jits it (state donated) and called directly
on the already mapped batches (`dyn` first runs one `fit` over them, so
that the tables and tags are those of a trained layer), without `fit`
around it: what is left is the compiled step, its dispatch included. The
models run in turns, round after round (the order reversed every other
round), so every ratio is taken seconds apart; printed: CPU and wall ms per
step, best and median of the rounds after the first, and how many
instructions the compiled step runs (XLA's CPU runtime runs one thunk per
fusion, copy, dot, scatter or conditional).

With `--trace`, XLA's per-op trace of one more pass per model (XLA's
`--xla_cpu_enable_xprof_traceme`, set here before JAX starts; parsed with
TensorFlow's `xplane_pb2`), each op's time put on the part of the model its
`op_name` names: a layer's forward (`jvp(<layer>)`) or backward
(`transpose(jvp(<layer>))`), the optimizer, or `other` (outside every
layer: the write block of `dyn`, the metrics, copies). The trace adds its
own cost to every op: read the parts as shares.

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python benchmarks/trace_dynamic_step.py
        [--batch 4096] [--rounds 8] [--trace]
"""

import argparse
import collections
import glob
import os
import pathlib
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--budget", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error(f"--rounds must be at least 2 (the first warms up); got {args.rounds}")
    return args


ARGS = parse()
if ARGS.trace:
    # read when JAX starts its CPU client, so before anything imports it
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_streaming as bench  # noqa: E402
from profile_dynamic_step import movielens_setup  # noqa: E402
from keras_mixed_dim.dynamic import dynamic_batches  # noqa: E402

# instructions that run no thunk of their own
_FREE = {"parameter", "bitcast", "get-tuple-element", "tuple", "constant"}


def models(batch, budget):
    """`{name: (model, batches)}` as `profile_dynamic_step.py` builds them."""
    bench.JIT_COMPILE = "auto"
    features, source = movielens_setup(budget, batch)

    dynamic = features("dynamic_md")
    model = bench.build_model(dynamic, 16, writes=True)
    mapped = list(dynamic_batches(source(), {f: dynamic[f].layer for f in bench.FEATURES},
                                  model, prefetch=0))
    # the tables and tags of a trained layer (the writes land in `fit`)
    model.fit((b for b in mapped), epochs=1, verbose=0)
    static = features("static")
    return {
        "dyn": (model, mapped),
        "dyn-noblock": (bench.build_model(dynamic, 16, writes=False),
                        [({k: v for k, v in x.items() if not k.endswith("_writes")}, y)
                         for x, y in mapped]),
        "static": (bench.build_model(static, 16),
                   [({f: static[f].lookup(x[f]) for f in bench.FEATURES}, y)
                    for x, y in source()]),
    }


def jitted(model, batches):
    """`[step, state, batches as arrays, compiled HLO text]` of the model's
    train step, jitted as the trainer jits it (state donated)."""
    if not model.optimizer.built:   # its slots appear at its first step
        model.fit((b for b in batches[:1]), epochs=1, verbose=0)
    state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                 optimizer_variables=True, metrics_variables=True)
    # a copy: the donated buffers must not be the variables' own
    state = jax.tree_util.tree_map(lambda a: jax.numpy.array(a, copy=True), state)
    data = [jax.tree_util.tree_map(jax.numpy.asarray, batch) for batch in batches]
    step = jax.jit(model.train_step, donate_argnums=0)
    hlo = step.lower(state, data[0]).compile().as_text()
    _, state = step(state, data[0])
    jax.block_until_ready(state)
    return [step, state, data, hlo]


def thunks(hlo):
    """Instructions of the compiled step's entry computation that run."""
    entry = hlo[hlo.index("\nENTRY"):]
    entry = entry[:entry.index("\n}\n")]
    ops = re.findall(r"^\s*(?:ROOT )?%?[\w.\-]+ = \S+ ([\w\-]+)\(", entry, re.MULTILINE)
    return sum(op not in _FREE for op in ops)


def run(entry):
    """One pass over the batches: CPU and wall ms per step."""
    step, state, data, _ = entry
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in data:
        _, state = step(state, batch)
    jax.block_until_ready(state)
    entry[1] = state
    return (1000 * (time.process_time() - cpu) / len(data),
            1000 * (time.perf_counter() - wall) / len(data))


def part_of(op_name, kinds):
    """The model part an HLO `op_name` belongs to: a layer's kind
    (`kinds`: layer name -> class name; a model's layers of one kind, the
    two features' lookups say, are one part) and pass, or the optimizer."""
    found = re.findall(r"(transpose\()?jvp\(([\w.]+)\)", op_name)
    if found:
        backward, layer = found[-1]
        return f"{kinds.get(layer, layer)} {'backward' if backward else 'forward'}"
    if re.search(r"(adam|sgd|optimizer)", op_name, re.IGNORECASE):
        return "optimizer"
    return "other"


def traced_parts(entry, model, directory):
    """`{part: us per step}` from XLA's per-op trace of one pass."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    hlo = entry[3]
    kinds = {layer.name: type(layer).__name__ for layer in model.layers}
    names = {}
    for line in hlo.splitlines():
        found = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"", line)
        if found:
            names[found.group(1)] = found.group(2)
    # a fusion's own line may lack metadata: its computation's root has it
    for fusion, called in re.findall(r"%?([\w.\-]+) = [^\n]*?calls=%?([\w.\-]+)", hlo):
        if fusion not in names:
            body = re.search(r"\n%?" + re.escape(called) + r" [^\n]*\{\n(.*?)\n\}", hlo, re.S)
            found = body and re.search(r"op_name=\"([^\"]*)\"", body.group(1))
            if found:
                names[fusion] = found.group(1)
    jax.profiler.start_trace(directory)
    run(entry)
    jax.profiler.stop_trace()
    space = xplane_pb2.XSpace()
    space.ParseFromString(open(glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)[0],
                               "rb").read())
    parts = collections.Counter()
    for plane in space.planes:
        events = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):
                continue
            for event in line.events:
                name = events.get(event.metadata_id, "")
                if name in names:   # an HLO instruction (not the executor's own events)
                    parts[part_of(names[name], kinds)] += event.duration_ps / 1e6
    return {part: us / len(entry[2]) for part, us in parts.items()}


def main():
    built = models(ARGS.batch, ARGS.budget)
    entries = {name: jitted(m, batches) for name, (m, batches) in built.items()}
    times = {name: [] for name in entries}
    for round_ in range(ARGS.rounds):
        for name in (list(entries) if round_ % 2 == 0 else list(entries)[::-1]):
            measured = run(entries[name])
            if round_:   # the first warms up
                times[name].append(measured)
    print(f"jax, batch {ARGS.batch}, {len(entries['dyn'][2])} batches, "
          f"{ARGS.rounds - 1} rounds, load average {os.getloadavg()[0]:.1f}: the jitted "
          f"train step alone (no fit), ms per step")
    for name, values in times.items():
        cpu, wall = np.array(values).T
        print(f"  {name:12s} CPU best {cpu.min():.3f} median {np.median(cpu):.3f}; wall best "
              f"{wall.min():.3f} median {np.median(wall):.3f}; {thunks(entries[name][3])} "
              f"thunks")
    if not ARGS.trace:
        return
    with tempfile.TemporaryDirectory() as directory:
        parts = {name: traced_parts(entry, built[name][0], f"{directory}/{name}")
                 for name, entry in entries.items()}
    print("XLA op time per step by part (us; traced, so read as shares):")
    names = sorted({p for found in parts.values() for p in found})
    print("  " + " " * 32 + "".join(f"{name:>14s}" for name in parts))
    for part in names + ["total"]:
        row = [found.get(part, 0.0) if part != "total" else sum(found.values())
               for found in parts.values()]
        print(f"  {part:32s}" + "".join(f"{us:14.0f}" for us in row))


if __name__ == "__main__":
    main()
