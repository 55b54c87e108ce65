"""Where a DLRM training step's time goes under JAX: `model.fit` per step
versus the jitted train step alone, the forward pass and the gradient, for
uniform d=16 and per-table MD (alpha 0.3) at Kaggle cardinalities x scale.

`model.fit` adds Keras's per-step host work (slicing numpy batches, moving
them to the device, dispatching); the raw step is what the device does. The
difference is what a faster input pipeline could win.

    KERAS_BACKEND=jax python benchmarks/bench_step_breakdown.py --scale 1 --iters 30
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402

from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES  # noqa: E402
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo  # noqa: E402
from keras_mixed_dim.models.dlrm import dlrm  # noqa: E402
from keras_mixed_dim.models.dlrm import embedding_layers  # noqa: E402


def milliseconds_per_call(fn, iters):
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(iters):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / iters * 1e3


def build(cardinalities, mode, with_metrics):
    keras.utils.set_random_seed(0)
    # one layer per feature: the layout the documented breakdown measured
    model = dlrm(embedding_layers(cardinalities, 16, mode, alpha=0.3), 16,
                 stacked=False)
    metrics = [keras.metrics.AUC(name="auc"),
               keras.metrics.BinaryCrossentropy(name="logloss"),
               keras.metrics.BinaryAccuracy(name="accuracy")] if with_metrics else []
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy", metrics=metrics)
    return model


def device_timings(model, dense, categorical, labels, batch, iters):
    x = {"dense": jnp.asarray(dense[:batch]),
         "categorical": jnp.asarray(categorical[:batch])}
    y = jnp.asarray(labels[:batch])
    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in model.optimizer.variables],
             [v.value for v in model.metrics_variables])
    step = jax.jit(model.train_step)
    trainable, non_trainable = state[0], state[1]
    forward = jax.jit(lambda t, n, x: model.stateless_call(t, n, x)[0])

    def loss(t, n, x, y):
        predictions = model.stateless_call(t, n, x, training=True)[0]
        return jnp.mean((predictions[:, 0] - y) ** 2)

    gradient = jax.jit(jax.grad(loss))
    return {
        "step": milliseconds_per_call(lambda: step(state, (x, y))[0], iters),
        "forward": milliseconds_per_call(lambda: forward(trainable, non_trainable, x), iters),
        "gradient": milliseconds_per_call(
            lambda: gradient(trainable, non_trainable, x, y), iters),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="Kaggle cardinalities times this")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--fit-steps", type=int, default=100)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2048, 8192])
    args = parser.parse_args()
    cardinalities = [max(1, int(round(c * args.scale))) for c in KAGGLE_CARDINALITIES]
    fit_batch = 8192
    dense, categorical, labels = SyntheticCriteo(
        fit_batch * (args.fit_steps + 20), cardinalities, seed=0).arrays()
    x = {"dense": dense, "categorical": categorical}
    print(f"# device {jax.devices()[0].device_kind}, {sum(cardinalities):,} ids")
    for mode in ("table", "uniform"):
        for with_metrics in (True, False):
            model = build(cardinalities, mode, with_metrics)
            model.fit(x, labels, batch_size=fit_batch, steps_per_epoch=2, verbose=0)
            start = time.perf_counter()
            model.fit(x, labels, batch_size=fit_batch, steps_per_epoch=args.fit_steps,
                      verbose=0)
            fit_ms = (time.perf_counter() - start) / args.fit_steps * 1e3
            line = f"{mode} metrics={with_metrics} fit b{fit_batch} {fit_ms:.2f} ms/step"
            if with_metrics:
                for batch in args.batch_sizes:
                    t = device_timings(model, dense, categorical, labels, batch, args.iters)
                    line += (f" | b{batch} raw step {t['step']:.2f} ms fwd "
                             f"{t['forward']:.2f} ms grad {t['gradient']:.2f} ms")
            print(line, flush=True)
            del model
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
