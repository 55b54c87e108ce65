"""`DynamicEmbedding`'s lookup against the one of an earlier commit, in one
process, on any backend: the layer's forward pass and its gradient
(compiled: `tf.function` without XLA on TensorFlow, `jax.jit` on JAX;
eager on PyTorch), the current `_vectors` against `--against`'s (with that
commit's `<backend>/dynamic_lookup.py` where it had one, as its `_vectors`
dispatched), in turns (each round times both, the order reversed every
other round; the ratio is read round by round). Two identical layers: the
`bench_streaming.py` `dynamic_md` layer of ml-100k's items (64 KB), the
ids of a batch from the middle of the stream mapped by `dynamic_batches`.
Outputs and gradients of the two are compared first (bitwise, or the
largest difference is printed).

    python benchmarks/bench_dynamic_lookup_ab.py --against 63cecf0 [--batch 4096]
        [--rounds 11] [--calls 200]

(prefix `KERAS_BACKEND=jax JAX_PLATFORMS=cpu` or `KERAS_BACKEND=torch`).
"""

import argparse
import ast
import importlib.util
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import bench_streaming as bench  # noqa: E402
from keras_mixed_dim.backend import NAME  # noqa: E402
from keras_mixed_dim.dynamic import dynamic_batches  # noqa: E402
from keras_mixed_dim.layers import dynamic_embedding as module  # noqa: E402

LAYER_PATH = "keras_mixed_dim/layers/dynamic_embedding.py"
METHODS = ("_projection_constants", "_vectors", "_stacked_projections")


def git_show(commit, path):
    """The text of `path` at `commit`, or None where it did not exist."""
    shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"],
                           capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def earlier_lookup(commit):
    """`patch(layer)`: gives `layer` the lookup methods of `commit`."""
    source = git_show(commit, LAYER_PATH)
    cls = next(n for n in ast.parse(source).body
               if isinstance(n, ast.ClassDef) and n.name == "DynamicEmbedding")
    found = {n.name: ast.get_source_segment(source, n) for n in cls.body
             if isinstance(n, ast.FunctionDef) and n.name in METHODS}
    own = None
    own_source = git_show(commit, f"keras_mixed_dim/backend/{NAME}/dynamic_lookup.py")
    if own_source is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
            file.write(own_source)
        spec = importlib.util.spec_from_file_location("earlier_dynamic_lookup", file.name)
        own = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(own)
    # the current module's names, but the dispatch of that commit
    namespace = dict(vars(module), dynamic_lookup=lambda: own)
    methods = {}
    for name, text in found.items():
        exec(textwrap.dedent(text), namespace, methods)

    def patch(layer):
        for name in found:
            setattr(layer, name, types.MethodType(methods[name], layer))
        layer._projection_constants()

    return patch


def mapped_layer(batch):
    stream, targets = bench.movielens_stream()
    n = targets.size
    keras.utils.set_random_seed(0)
    features = {f: bench.Feature("dynamic_md", 65536, 16, stream[f][: n // 10], 0, None)
                for f in bench.FEATURES}
    model = bench.build_model(features, 16, writes=False)
    source = (({f: stream[f][lo:lo + batch] for f in bench.FEATURES},
               targets[lo:lo + batch, None]) for lo in range(0, n - batch + 1, batch))
    mapped = list(dynamic_batches(source, {f: features[f].layer for f in bench.FEATURES},
                                  model, prefetch=0))
    return features["item"].layer, mapped[len(mapped) // 2][0]["item"]


def forward_and_gradient(layer, x, cotangent):
    """`(step, as_numpy)`: `step()` runs the forward pass and the gradient
    of every variable (what is timed); `as_numpy(step())` lists the outputs
    and the gradients, dense, as numpy."""
    if NAME == "tensorflow":
        import tensorflow as tf

        values, x = [v.value for v in layer.trainable_variables], tf.constant(x)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                outputs = layer(x)
                loss = tf.reduce_sum(outputs * cotangent)
            return [outputs] + tape.gradient(loss, values)

        return step, lambda result: [tf.convert_to_tensor(t).numpy() for t in result]
    if NAME == "jax":
        import jax

        fixed = [v.value for v in layer.non_trainable_variables]

        def loss(values):
            outputs, _ = layer.stateless_call(values, fixed, x)
            return (outputs * cotangent).sum(), outputs

        compiled = jax.jit(jax.value_and_grad(loss, has_aux=True))
        values = [v.value for v in layer.trainable_variables]

        def step():
            (_, outputs), grads = compiled(values)
            return jax.block_until_ready([outputs, *grads])

        return step, lambda result: [np.asarray(t) for t in result]
    import torch

    def step():
        for v in layer.trainable_variables:
            v.value.grad = None
        outputs = layer(x)
        (outputs * torch.as_tensor(cotangent)).sum().backward()
        return [outputs.detach()] + [v.value.grad for v in layer.trainable_variables]

    return step, lambda result: [t.to_dense().numpy() for t in result]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the earlier commit")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    patch = earlier_lookup(args.against)
    cotangent = np.random.default_rng(1).normal(size=(args.batch, 16)).astype("float32")
    runs = {}
    for name in ("current", args.against):
        layer, x = mapped_layer(args.batch)
        if name != "current":
            patch(layer)
        runs[name] = forward_and_gradient(layer, x, cotangent)
    results = [as_numpy(step()) for step, as_numpy in runs.values()]
    differences = [np.abs(a - b).max() for a, b in zip(*results)
                   if not np.array_equal(a, b)]
    print("outputs and gradients: " + ("bitwise equal" if not differences else
                                       f"largest difference {max(differences):.3g}"))
    times = {name: [] for name in runs}
    for round_ in range(args.rounds):
        for name in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):
            step = runs[name][0]
            step()
            begin = time.process_time()
            for _ in range(args.calls):
                step()
            times[name].append(1e6 * (time.process_time() - begin) / args.calls)
    ratios = np.array(times[args.against]) / np.array(times["current"])
    print(f"{NAME}, batch {args.batch}, {args.rounds} rounds, load average "
          f"{os.getloadavg()[0]:.1f}: CPU us per forward + gradient (median) current "
          f"{np.median(times['current']):.0f}, {args.against} "
          f"{np.median(times[args.against]):.0f}; {args.against}/current median "
          f"{np.median(ratios):.3f} (min {ratios.min():.3f}, max {ratios.max():.3f})")


if __name__ == "__main__":
    main()
