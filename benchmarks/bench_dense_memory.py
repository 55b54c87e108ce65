"""Memory and quality of approximate activations and low-rank gradients.

For the DLRM on synthetic Criteo-like data (small cardinalities, so the
dense towers dominate) and NCF on MovieLens 100K, trains each configuration
from the same initial weights and data order and prints:

- backward bytes: bytes of the arrays with a batch dimension that `jax.vjp`
  of the loss keeps for the backward pass (the saved activations, measured,
  not computed), for the whole model;
- optimizer state: bytes of `optimizer.variables`, in all and for the
  kernels `LowRankGradients` covers;
- XLA's memory estimate of the compiled loss-and-gradient function
  (`jax.jit(...).lower(...).compile().memory_analysis()`: temporaries plus
  outputs). On XLA:CPU this need not move with the residuals: the compiler
  fuses the forward and backward pass of the whole step and may recompute
  or keep values as it sees fit, and the buffer assignment of CPU fusions
  differs from a GPU's.
- step time (a train step in `model.fit`, after compilation) and
  validation logloss / AUC (MSE for NCF).

Runs on the JAX backend (the measurements use JAX). With `--device-peak`,
run one configuration per process (`--configs exact`) on a GPU to also print
the device's peak bytes in use.

    KERAS_BACKEND=jax python benchmarks/bench_dense_memory.py
"""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np

CONFIGS = {
    "exact": (None, None),
    "approx8": (8, None),
    "approx4": (4, None),
    "lowrank1": (None, 1),
    "lowrank4": (None, 4),
    "lowrank16": (None, 16),
}
MOVIELENS = "/work/shared/data/movielens/ml-100k/u.data"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16_384, help="DLRM train rows")
    parser.add_argument("--val-rows", type=int, default=8_192)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--max-cardinality", type=int, default=2000,
                        help="cap of each feature's cardinality")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--min-size", type=int, default=4096,
                        help="smallest kernel given a low-rank gradient")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--ncf-configs", default="exact,approx8,approx4,lowrank4")
    parser.add_argument("--ncf-epochs", type=int, default=3)
    parser.add_argument("--movielens", default=MOVIELENS)
    parser.add_argument("--no-ncf", action="store_true")
    parser.add_argument("--device-peak", action="store_true",
                        help="print the device's peak bytes in use (GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--residuals-only", action="store_true",
                        help="only print the DLRM towers' residual bytes")
    return parser.parse_args(argv)


def activation_residual_bytes(model, inputs, targets, loss_fn, codes_only=False):
    """Bytes of the batch-dimension residuals `jax.vjp` keeps for the loss
    (with `codes_only`, only the uint8 ones: the codes and bit masks)."""
    import jax

    batch = len(targets)
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def loss(tv):
        out, _ = model.stateless_call(tv, frozen, inputs, training=True)
        return loss_fn(targets, out)

    _, vjp = jax.vjp(loss, trainable)
    leaves = jax.tree_util.tree_leaves(vjp)
    return int(sum(leaf.nbytes for leaf in leaves if leaf.ndim and leaf.shape[0] == batch
                   and (not codes_only or str(leaf.dtype) == "uint8")))


def tower_split(build, x, y, batch):
    """Residual bytes of the Dense towers, exact and approximated.

    With every Dense converted, the uint8 residuals are the towers' codes
    and masks and the rest belongs to the other layers (lookups,
    interaction, loss), which are the same in the exact model; the exact
    towers keep the exact total less that rest."""
    import keras

    from keras_mixed_dim.layers.approx_activation_dense import approximate_activations

    def loss_fn(t, p):
        return keras.ops.mean(keras.losses.binary_crossentropy(t, p))

    px, py = {k: v[:batch] for k, v in x.items()}, y[:batch]
    exact = build()
    total = activation_residual_bytes(exact, px, py, loss_fn)
    print(f"\nDLRM tower residuals at batch {batch} (KiB)")
    print(f"{'config':<8} {'all':>8} {'towers':>8} {'other':>8} {'towers x less':>13}")
    rows = []
    for bits in (8, 4):
        model = approximate_activations(exact, bits=bits)
        all_bytes = activation_residual_bytes(model, px, py, loss_fn)
        codes = activation_residual_bytes(model, px, py, loss_fn, codes_only=True)
        rows.append((f"approx{bits}", all_bytes, codes, all_bytes - codes))
    other = rows[0][3]
    print(f"{'exact':<8} {total / 1024:>8.0f} {(total - other) / 1024:>8.0f} "
          f"{other / 1024:>8.0f} {1.0:>13.2f}")
    for name, all_bytes, codes, rest in rows:
        print(f"{name:<8} {all_bytes / 1024:>8.0f} {codes / 1024:>8.0f} "
              f"{rest / 1024:>8.0f} {(total - other) / codes:>13.2f}")


def compiled_memory(model, inputs, targets, loss_fn):
    """XLA's estimate for the jitted loss-and-gradient function, or None."""
    import jax

    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def loss(tv, xs, ys):
        out, _ = model.stateless_call(tv, frozen, xs, training=True)
        return loss_fn(ys, out)

    try:
        compiled = jax.jit(jax.value_and_grad(loss)).lower(trainable, inputs, targets).compile()
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every platform reports it
        return None
    if stats is None:
        return None
    return int(stats.temp_size_in_bytes + stats.output_size_in_bytes)


def optimizer_bytes(optimizer, covered_paths):
    total = covered = 0
    for variable in optimizer.variables:
        size = int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize
        total += size
        if any(p.replace("/", "_") in variable.path for p in covered_paths):
            covered += size
    return total, covered


def timed_fit(model, x, y, batch, epochs):
    """Fits; returns the median seconds between train steps (so compilation,
    in the first step, is left out)."""
    import keras

    stamps = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[Stamp()])
    return float(np.median(np.diff(stamps))) if len(stamps) > 1 else float("nan")


def run_configs(name, build, data, val, loss_name, configs, batch, epochs, lr,
                min_size, device_peak):
    import keras

    from keras_mixed_dim.optimizers import LowRankGradients
    from keras_mixed_dim.optimizers import dense_memory_options

    x, y = data
    probe_x = {k: v[:batch] for k, v in x.items()}
    probe_y = y[:batch]
    if loss_name == "bce":
        def loss_fn(t, p):
            return keras.ops.mean(keras.losses.binary_crossentropy(t, p))
    else:
        def loss_fn(t, p):
            return keras.ops.mean((t - p) ** 2)
    # the kernels low rank covers, for the "covered" state column (same for all)
    reference = build()
    probe = LowRankGradients("adam", rank=4, min_size=min_size)
    covered_paths = [v.path for v in reference.trainable_variables if probe.covers(v)]
    rows = []
    for config in configs:
        bits, rank = CONFIGS[config]
        model = build()
        model, optimizer = dense_memory_options(model, keras.optimizers.Adam(lr),
                                                approx_bits=bits, low_rank=rank,
                                                min_size=min_size)
        metrics = [keras.metrics.AUC(name="auc")] if loss_name == "bce" else []
        model.compile(optimizer=optimizer,
                      loss="binary_crossentropy" if loss_name == "bce" else "mse",
                      metrics=metrics)
        backward = activation_residual_bytes(model, probe_x, probe_y, loss_fn)
        compiled = compiled_memory(model, probe_x, probe_y, loss_fn)
        step = timed_fit(model, x, y, batch, epochs)
        state, covered = optimizer_bytes(model.optimizer, covered_paths)
        result = model.evaluate(val[0], val[1], batch_size=4096, verbose=0,
                                return_dict=True)
        row = {"config": config, "backward": backward, "compiled": compiled,
               "state": state, "covered": covered, "step_ms": 1000 * step,
               "loss": result["loss"], "auc": result.get("auc")}
        if device_peak:
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            row["peak"] = stats.get("peak_bytes_in_use")
        rows.append(row)
        print(f"  {name} {config}: done", file=sys.stderr, flush=True)
    print_table(name, rows, loss_name, covered_paths)
    return rows


def print_table(name, rows, loss_name, covered_paths):
    exact = next((r for r in rows if r["config"] == "exact"), rows[0])
    quality = "logloss" if loss_name == "bce" else "MSE"
    print(f"\n{name}: low-rank covers {', '.join(covered_paths)}")
    header = (f"{'config':<10} {'backward KiB':>12} {'x less':>6} {'XLA est MiB':>11} "
              f"{'opt state KiB':>13} {'covered KiB':>11} {'x less':>6} "
              f"{'step ms':>8} {quality:>8} {'rel diff':>8}")
    if loss_name == "bce":
        header += f" {'AUC':>7}"
    if "peak" in rows[0]:
        header += f" {'peak MiB':>9}"
    print(header)
    for r in rows:
        compiled = "n/a" if r["compiled"] is None else f"{r['compiled'] / 2**20:.2f}"
        line = (f"{r['config']:<10} {r['backward'] / 1024:>12.0f} "
                f"{exact['backward'] / r['backward']:>6.2f} {compiled:>11} "
                f"{r['state'] / 1024:>13.0f} {r['covered'] / 1024:>11.0f} "
                f"{exact['covered'] / r['covered']:>6.1f} {r['step_ms']:>8.1f} "
                f"{r['loss']:>8.5f} {100 * (r['loss'] / exact['loss'] - 1):>+7.2f}%")
        if loss_name == "bce":
            line += f" {r['auc']:>7.4f}"
        if "peak" in r:
            line += f" {(r['peak'] or 0) / 2**20:>9.1f}"
        print(line)


def dlrm_benchmark(args):
    import keras

    from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES
    from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo
    from keras_mixed_dim.models.dlrm import dlrm
    from keras_mixed_dim.models.dlrm import embedding_layers

    cards = tuple(min(c, args.max_cardinality) for c in KAGGLE_CARDINALITIES)
    stream = SyntheticCriteo(args.rows + args.val_rows, cardinalities=cards, seed=args.seed)
    dense, categorical, labels = stream.arrays()
    train = slice(0, args.rows)
    val = slice(args.rows, None)

    def build():
        keras.utils.set_random_seed(args.seed)
        # one layer per feature: the layout the documented figures used
        return dlrm(embedding_layers(cards, args.dim, "uniform"), args.dim,
                    stacked=False)

    if args.residuals_only:
        return tower_split(build, {"dense": dense, "categorical": categorical}, labels,
                           args.batch)
    print(f"DLRM (bottom 512-256-64-{args.dim}, top 512-256-1), 26 features of at most "
          f"{args.max_cardinality} ids, dim {args.dim}; {args.rows} train / "
          f"{args.val_rows} validation rows, batch {args.batch}, {args.epochs} epochs, "
          f"Adam({args.lr})")
    return run_configs(
        "DLRM", build,
        ({"dense": dense[train], "categorical": categorical[train]}, labels[train]),
        ({"dense": dense[val], "categorical": categorical[val]}, labels[val]),
        "bce", args.configs.split(","), args.batch, args.epochs, args.lr,
        args.min_size, args.device_peak,
    )


def ncf_benchmark(args):
    import keras

    from keras_mixed_dim.datasets import read_ratings
    from keras_mixed_dim.models import make_embedding
    from keras_mixed_dim.models import neural_cf

    if not os.path.exists(args.movielens):
        print(f"\nNCF: skipped, no MovieLens 100K at {args.movielens}")
        return None
    ratings = read_ratings(args.movielens)
    users = np.unique(ratings.users, return_inverse=True)[1].astype("int32")
    items = np.unique(ratings.items, return_inverse=True)[1].astype("int32")
    values = ratings.ratings.astype("float32")
    order = np.random.default_rng(args.seed).permutation(len(values))
    cut = int(0.9 * len(values))
    tr, va = order[:cut], order[cut:]
    mean = float(values[tr].mean())

    def build():
        keras.utils.set_random_seed(args.seed)
        return neural_cf(make_embedding("uniform", int(users.max()) + 1, 64, name="user_embedding"),
                         make_embedding("uniform", int(items.max()) + 1, 64, name="item_embedding"),
                         global_mean=mean)

    print(f"\nNCF (64-dim embeddings, MLP 128-128-32-1), MovieLens 100K random 90/10 split, "
          f"batch 256, {args.ncf_epochs} epochs, Adam({args.lr})")
    return run_configs(
        "NCF", build,
        ({"user": users[tr], "item": items[tr]}, values[tr]),
        ({"user": users[va], "item": items[va]}, values[va]),
        "mse", args.ncf_configs.split(","), 256, args.ncf_epochs, args.lr,
        args.min_size, args.device_peak,
    )


def main(argv=None):
    args = parse_args(argv)
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit("bench_dense_memory.py measures with JAX: run it with "
                         "KERAS_BACKEND=jax.")
    import jax

    print(f"backend jax {jax.__version__} on {jax.devices()[0].platform}")
    dlrm_benchmark(args)
    if not args.no_ncf and not args.residuals_only:
        ncf_benchmark(args)


if __name__ == "__main__":
    main()
