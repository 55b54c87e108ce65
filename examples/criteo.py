"""Train DLRM on Criteo (raw Kaggle files) or synthetic Criteo-like rows with
uniform, per-table mixed, or per-table-and-block mixed embeddings.

    python examples/criteo.py                                     # synthetic default
    python examples/criteo.py --data ../shared/data/criteo/derived/train.tiny.txt
    python examples/criteo.py --synthetic-rows 1000000 --cardinality-scale 1 \\
        --embedding table --alpha 0.3 --dim 16 --results-json runs/md.json
    python examples/criteo.py --preset mlperf-dcnv2 --preset-scale 1000 \\
        --embedding table --budget 1/16 --steps 20          # MLPerf DLRM-DCNv2

`--preset` takes the model (tables, bags, dims, MLPs, interaction) from
`keras_mixed_dim.models.presets` and streams its synthetic data
(`StreamingCriteo`); examples/dlrm_scale.py runs such a model end to end
(checkpoint, resume, export, serving check).
"""

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from keras_mixed_dim.datasets.criteo.format import KAGGLE_CARDINALITIES  # noqa: E402
from keras_mixed_dim.distribute import DISTRIBUTE_CHOICES  # noqa: E402
from keras_mixed_dim.distribute import initialize_processes  # noqa: E402
from keras_mixed_dim.distribute import jax_distribution  # noqa: E402
from keras_mixed_dim.distribute import strategy_scope  # noqa: E402
from keras_mixed_dim.datasets.criteo.synthetic import SyntheticCriteo  # noqa: E402
from keras_mixed_dim.models.kinds import EMBEDDING_KINDS  # noqa: E402
from keras_mixed_dim.models.kinds import get_kind  # noqa: E402

from keras_mixed_dim.models.dlrm import dlrm  # noqa: E402
from keras_mixed_dim.models.dlrm import embedding_layers  # noqa: E402
from keras_mixed_dim.models.dlrm import embedding_summary  # noqa: E402
from keras_mixed_dim.models.dlrm import stack_embeddings  # noqa: E402
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding  # noqa: E402
from keras_mixed_dim.planning import zipf_counts  # noqa: E402
from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer  # noqa: E402
from common.metering import ThroughputMeter  # noqa: E402
from common.metering import peak_memory  # noqa: E402
from keras_mixed_dim.optimizers import dense_memory_options  # noqa: E402
from common.outputs import write_run_outputs  # noqa: E402

OPTIMIZERS = ("adam", "adagrad", "amsgrad", "sgd")
# The embedding tables' sparse row update for each --optimizer (Keras's own
# optimizer still updates the MLPs): lazy Adam, row-wise Adagrad, SGD.
TABLE_OPTIMIZERS = {"adam": "adam", "amsgrad": "adam", "adagrad": "adagrad", "sgd": "sgd"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data (default: synthetic rows)")
    data.add_argument("--data", nargs="+", help="raw Criteo train files (TAB format)")
    data.add_argument("--val-every", type=int, default=10,
                      help="raw data: every N-th line is held out for validation")
    data.add_argument("--min-count", type=int, default=2,
                      help="raw data: keep values seen at least this often")
    data.add_argument("--top-k", type=int, help="raw data: keep at most K values per feature")
    data.add_argument("--oov-buckets", type=int, default=4,
                      help="raw data: hash buckets for values not kept")
    data.add_argument("--vocab-dir",
                      help="raw data: where the vocabulary files go (default: "
                      "next to the data, or a user cache folder if that is read-only)")
    data.add_argument("--skip-malformed", action="store_true",
                      help="raw data: count and skip malformed lines instead of failing")
    data.add_argument("--synthetic-rows", type=int, default=200_000)
    data.add_argument("--preset", help="a named model with its streamed synthetic "
                      "data (keras_mixed_dim.models.presets: mlperf-dcnv2); sets "
                      "the tables, bags, --dim, --bottom, --top and the interaction")
    data.add_argument("--preset-scale", type=float, default=1,
                      help="--preset: divide its cardinalities by this")
    data.add_argument("--cardinality-scale", type=float, default=0.01,
                      help="synthetic: Kaggle cardinalities times this (1 = full)")
    model = parser.add_argument_group("model")
    model.add_argument("--embedding", choices=EMBEDDING_KINDS + ("block",),
                       default="table", help="an embedding kind of "
                       "keras_mixed_dim.models.kinds ('block' is the deprecated "
                       "name of 'table_blocks')")
    model.add_argument("--dim", type=int, default=16, help="embedding (base) dim d")
    model.add_argument("--alpha", type=float, default=0.3)
    budget = model.add_mutually_exclusive_group()
    budget.add_argument("--budget-bytes", type=float,
                        help="bytes of all embedding layers, every array counted")
    budget.add_argument("--budget-fraction", type=_fraction,
                        help="share of the uniform float32 tables' bytes, such as "
                        "1/16 or 0.0625, every array counted (default 1/16 for "
                        "qr, md_qr, hashing, robe, lma; none for the others)")
    budget.add_argument("--budget", type=_budget,
                        help="deprecated (removed in 0.4.0): md_solver's parameter "
                        "budget for table / table_blocks, 4 x budget bytes for the "
                        "other kinds; a fraction is that share of the uniform "
                        "tables' parameters. Use --budget-bytes or --budget-fraction")
    model.add_argument("--blocks", type=int, default=4, help="blocks per large table")
    model.add_argument("--bottom", type=int, nargs="+", default=[512, 256, 64])
    model.add_argument("--top", type=int, nargs="+", default=[512, 256])
    layout = model.add_mutually_exclusive_group()
    layout.add_argument("--stacked", action="store_const", const=True, default=None,
                        help="all tables in one StackedEmbedding (one gather per "
                        "width); the default where the embedding kind allows it "
                        "(uniform, table, block)")
    layout.add_argument("--per-feature", dest="stacked", action="store_const",
                        const=False, help="one embedding layer per feature")
    train = parser.add_argument_group("training")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                       help="the MLPs' Keras optimizer; embedding tables get its "
                       "sparse row-wise form (lazy Adam, row-wise Adagrad, SGD) on "
                       "the rows each batch looks up")
    train.add_argument("--dense-table-updates", action="store_true",
                       help="update the embedding tables with Keras's own optimizer "
                       "too (every row, every step: slower, for comparison)")
    train.add_argument("--table-lr", type=float,
                       help="learning rate of the tables' sparse updates (default: --lr)")
    train.add_argument("--table-optimizer", choices=("adam", "adagrad", "sgd", "ftrl"),
                       help="the tables' sparse row update (default: --optimizer's "
                       "form; ftrl: FTRL-Proximal)")
    train.add_argument("--approx-activations", type=int, choices=(8, 4),
                       help="keep K-bit activations of the MLPs for the backward "
                       "pass (ApproxActivationDense)")
    train.add_argument("--low-rank-gradients", type=int, metavar="K",
                       help="rank-K gradients and optimizer state for the MLP kernels "
                       "(LowRankGradients)")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--batch-size", type=int, default=1024)
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--steps", type=int, help="steps per epoch (default: all data)")
    train.add_argument("--steps-per-execution", type=int, default=1,
                       help="train steps per compiled call (amortizes Keras's "
                       "per-step host work on fast accelerators)")
    train.add_argument("--mixed-precision", action="store_true")
    train.add_argument("--distribute", choices=DISTRIBUTE_CHOICES,
                       help="mirrored / multiworker: tf.distribute (TensorFlow "
                       "backend; multiworker reads TF_CONFIG); data / model: "
                       "keras.distribution DataParallel / ModelParallel with table "
                       "rows sharded (JAX backend)")
    train.add_argument("--jit-compile", action=argparse.BooleanOptionalAction,
                       help="XLA-compile the train step (default: Keras's 'auto', "
                       "on for JAX)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2])
    out = parser.add_argument_group("outputs")
    out.add_argument("--results-json")
    out.add_argument("--save", help=".keras file for the trained model")
    args = parser.parse_args(argv)
    if args.save and not args.save.endswith(".keras"):
        parser.error(f"--save must end in .keras, got {args.save!r}")
    if args.steps_per_execution < 1:
        parser.error(f"--steps-per-execution must be >= 1, got {args.steps_per_execution}")
    if args.cardinality_scale <= 0:
        parser.error(f"--cardinality-scale must be > 0, got {args.cardinality_scale}")
    return args


def _fraction(text):
    from keras_mixed_dim.budgets import check_budget_fraction

    try:
        return check_budget_fraction(text, "--budget-fraction")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _budget(text):
    """A parameter count, or a fraction of the uniform tables ("1/16", or a
    number at most 1): kept as ("fraction", value) until the tables are known."""
    from keras_mixed_dim.models.presets import parse_fraction

    if "/" in text or float(text) <= 1:
        try:
            return ("fraction", parse_fraction(text, "--budget"))
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return float(text)


def _resolve_budget(args, cardinalities):
    if args.budget is None:
        return
    warnings.warn("--budget is deprecated and will be removed in 0.4.0: it counted "
                  "parameters (md_solver's for table / table_blocks). Use "
                  "--budget-bytes or --budget-fraction (every array counted).",
                  DeprecationWarning, stacklevel=2)
    if isinstance(args.budget, tuple):
        args.budget = args.budget[1] * sum(cardinalities) * args.dim


def make_optimizer(name, lr, sparse_tables=True, table_lr=None, model=None,
                   approx_bits=None, low_rank=None, table_optimizer=None):
    """The optimizer (and model) of a run: Keras's optimizer for the MLPs,
    optionally low-rank gradients and approximate activations for them, and
    sparse row updates for the tables. Returns `(model, optimizer)`."""
    if name == "adam":
        optimizer = keras.optimizers.Adam(lr)
    elif name == "amsgrad":
        optimizer = keras.optimizers.Adam(lr, amsgrad=True)
    elif name == "adagrad":
        optimizer = keras.optimizers.Adagrad(lr)
    else:
        optimizer = keras.optimizers.SGD(lr)
    if approx_bits or low_rank:
        model, optimizer = dense_memory_options(model, optimizer, approx_bits=approx_bits,
                                                low_rank=low_rank)
    if not sparse_tables:
        return model, optimizer
    return model, SparseRowOptimizer(
        optimizer, table_optimizer=table_optimizer or TABLE_OPTIMIZERS[name],
        table_learning_rate=table_lr)


def load_data(args):
    """Returns train / val inputs, cardinalities, counts and vocabulary bytes."""
    if args.data:
        if keras.backend.backend() != "tensorflow":
            raise SystemExit("Raw Criteo files stream through tf.data: use the "
                             "TensorFlow backend, or synthetic data on other backends.")
        from keras_mixed_dim.datasets.criteo.pipeline import build_or_load_vocabulary
        from keras_mixed_dim.datasets.criteo.pipeline import criteo_dataset

        try:
            vocabulary, meta = build_or_load_vocabulary(
                args.data, folder=args.vocab_dir, min_count=args.min_count, top_k=args.top_k,
                num_oov_buckets=args.oov_buckets, skip_malformed=args.skip_malformed,
                progress=args.verbose > 0,
            )
        except ValueError as error:  # empty or malformed data: say so, no traceback
            raise SystemExit(f"error: {error}") from None
        pipeline_args = dict(vocabulary=vocabulary, batch_size=args.batch_size,
                      skip_malformed=args.skip_malformed, val_every=args.val_every)
        train = criteo_dataset(args.data, part="train", shuffle_buffer=100_000,
                               seed=args.seed, **pipeline_args)
        val = criteo_dataset(args.data, part="val", **pipeline_args)
        counts = [vocabulary.index_counts(f) for f in range(len(vocabulary.sizes))]
        source = {"files": args.data, "rows": meta["rows"], "skipped": meta["skipped"]}
        args._vocabulary = vocabulary
        return train, val, list(vocabulary.sizes), counts, vocabulary.bytes, source
    if args.preset:
        return _preset_data(args)
    cardinalities = [max(1, int(round(c * args.cardinality_scale)))
                     for c in KAGGLE_CARDINALITIES]
    generator = SyntheticCriteo(args.synthetic_rows, cardinalities, seed=args.seed)
    dense, categorical, labels = generator.arrays()
    cut = int(0.9 * len(labels))
    # whole batches only: a smaller last batch is a new shape, and XLA
    # compiles the whole train step again for it (seconds, mid-epoch)
    end = max(cut - cut % args.batch_size, min(cut, args.batch_size))
    train = ({"dense": dense[:end], "categorical": categorical[:end]}, labels[:end])
    val = ({"dense": dense[cut:], "categorical": categorical[cut:]}, labels[cut:])
    counts = [zipf_counts(c, generator.zipf_exponent) for c in cardinalities]
    source = {"synthetic_rows": args.synthetic_rows,
              "cardinality_scale": args.cardinality_scale}
    return train, val, cardinalities, counts, 0, source


def _preset_data(args):
    """The preset's model settings and its streamed data: `--steps` batches
    (default: --synthetic-rows / --batch-size, the same each epoch) and 4
    validation batches drawn after them."""
    from keras_mixed_dim.datasets.criteo.streaming import StreamingCriteo
    from keras_mixed_dim.models.presets import get_preset

    try:
        config = get_preset(args.preset, args.preset_scale)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    args.dim, args.bottom, args.top = config.dim, list(config.bottom), list(config.top)
    args._config = config
    data = StreamingCriteo(config.cardinalities, args.batch_size,
                           multi_hot_sizes=config.bag_sizes,
                           num_dense=config.num_dense, seed=args.seed)
    steps = args.steps or max(1, args.synthetic_rows // args.batch_size)
    train = data.dataset(steps)
    val = data.dataset(4, start=steps)
    counts = None  # the stream's ids are frequency ranks
    source = {"preset": args.preset, "preset_scale": args.preset_scale}
    return train, val, list(config.cardinalities), counts, 0, source


def build_model(args, cardinalities, counts):
    _resolve_budget(args, cardinalities)
    config = getattr(args, "_config", None)
    preset = {} if config is None else dict(
        bag_sizes=config.bag_sizes, interaction=config.interaction,
        cross_layers=config.cross_layers, cross_rank=config.cross_rank,
        num_dense=config.num_dense)
    budget = dict(budget_bytes=args.budget_bytes, budget_fraction=args.budget_fraction)
    kind = get_kind(args.embedding, "dlrm")
    if args.budget is not None:
        # the deprecated parameter budget, as before
        if kind.name in ("table", "table_blocks"):
            budget = dict(budget=args.budget)
        else:
            budget = dict(budget_bytes=4 * args.budget)
    elif kind.needs_budget and args.budget_bytes is None and args.budget_fraction is None:
        budget["budget_fraction"] = 1 / 16
    embeddings = embedding_layers(cardinalities, args.dim, kind.name,
                                  alpha=args.alpha, counts=counts,
                                  num_blocks=args.blocks, bag_sizes=preset.get("bag_sizes"),
                                  **budget)
    stacked = stack_embeddings(embeddings, args.stacked,
                               bag_sizes=preset.get("bag_sizes"))
    if args.distribute in ("data", "model"):
        # before the model is built, so its variables get their layouts
        jax_distribution(args.distribute, embeddings if stacked is None else [stacked])
    model = dlrm(embeddings if stacked is None else stacked, args.dim,
                 bottom=args.bottom, top=args.top, stacked=stacked is not None,
                 **preset)
    sparse_tables = not args.dense_table_updates
    model, optimizer = make_optimizer(
        args.optimizer, args.lr, sparse_tables, args.table_lr, model=model,
        approx_bits=args.approx_activations, low_rank=args.low_rank_gradients,
        table_optimizer=args.table_optimizer)
    model.compile(
        optimizer=optimizer,
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"),
                 keras.metrics.BinaryCrossentropy(name="logloss"),
                 keras.metrics.BinaryAccuracy(name="accuracy")],
        jit_compile="auto" if args.jit_compile is None else args.jit_compile,
        steps_per_execution=args.steps_per_execution,
    )
    return model, embeddings


def run(args):
    if args.distribute in ("data", "model"):
        initialize_processes()  # before anything touches a JAX device
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    started = time.perf_counter()
    train, val, cardinalities, counts, vocab_bytes, source = load_data(args)
    backend = keras.backend.backend()
    try:
        scope = strategy_scope(args.distribute)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    with scope:
        model, embeddings = build_model(args, cardinalities, counts)
    meter = ThroughputMeter(args.batch_size)
    fit = dict(epochs=args.epochs, steps_per_epoch=args.steps, verbose=args.verbose,
               callbacks=[meter])
    if isinstance(train, tuple):
        history = model.fit(*train, batch_size=args.batch_size, **fit)
        metrics = model.evaluate(*val, batch_size=8192, verbose=0, return_dict=True)
    else:
        history = model.fit(train, shuffle=False, **fit)
        if not history.history.get("loss"):
            raise SystemExit("error: no training batches (every valid line was held "
                             "out for validation; see --val-every)")
        metrics = model.evaluate(val, verbose=0, return_dict=True)
    stacked = next((layer for layer in model.layers
                    if isinstance(layer, StackedEmbedding)), None)
    # with a stacked layer the per-feature layers only lent their plans; the
    # stacked layer holds every weight
    summary = embedding_summary(embeddings if stacked is None else stacked)
    results = {
        "source": source,
        "embedding": args.embedding,
        "approx_activations": args.approx_activations,
        "low_rank_gradients": args.low_rank_gradients,
        "dim": args.dim,
        "alpha": None if args.embedding == "uniform" else args.alpha,
        "budget": args.budget,
        "budget_bytes": args.budget_bytes,
        "budget_fraction": args.budget_fraction,
        "cardinalities": cardinalities,
        "embedding_dims": [list(e.plan.dims) if getattr(e, "plan", None) is not None
                           else [args.dim] for e in embeddings],
        "embedding_params": summary["params"],
        "embedding_bytes": summary["bytes"],
        "vocabulary_bytes": vocab_bytes,
        "total_params": model.count_params(),
        "val": {k: float(v) for k, v in metrics.items()},
        "loss_history": [float(x) for x in history.history["loss"]],
        "train_examples_per_second": meter.examples_per_second,
        "optimizer": args.optimizer,
        "table_updates": "dense" if args.dense_table_updates else "sparse",
        "stacked": stacked is not None,
        "backend": backend,
        "batch_size": args.batch_size,
        **peak_memory(),
        "wall_seconds": time.perf_counter() - started,
    }
    chief = write_run_outputs(results, args.results_json, model, args.save)
    if args.save and chief:
        vocabulary = getattr(args, "_vocabulary", None)
        if vocabulary is not None:
            # the raw-value vocabularies the export ships as assets, bound to
            # this model file by its hash (export_model.py checks it)
            from keras_mixed_dim.io_utils import file_sha256

            vocabulary.save(args.save[: -len(".keras")] + ".vocab",
                            meta={"model_sha256": file_sha256(args.save)})
    return results


def print_summary(results):
    mb = 1 / 2**20
    rows = [
        ("embedding mode", f"{results['embedding']} (d={results['dim']}, "
                           f"alpha={results['alpha']})"),
        ("tables", f"{len(results['cardinalities'])}, "
                   f"{sum(results['cardinalities']):,} rows"),
        ("embedding params", f"{results['embedding_params']:,}"),
        ("embedding bytes", f"{results['embedding_bytes'] * mb:,.2f} MiB"),
        ("vocabulary bytes", f"{results['vocabulary_bytes'] * mb:,.2f} MiB"),
        ("total params", f"{results['total_params']:,}"),
        ("val AUC", f"{results['val']['auc']:.4f}"),
        ("val log loss", f"{results['val']['logloss']:.4f}"),
        ("val accuracy", f"{results['val']['accuracy']:.4f}"),
        ("train examples/s", f"{results['train_examples_per_second']:,.0f}"),
        ("peak device memory", _mib(results["device_peak_bytes"], results["device"])),
        ("peak host memory", _mib(results["host_peak_bytes"])),
        ("wall time", f"{results['wall_seconds']:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"{k:>{width}}  {v}" for k, v in rows))


def _mib(num_bytes, device=None):
    if num_bytes is None:
        return "n/a (no accelerator)"
    text = f"{num_bytes / 2**20:,.0f} MiB"
    return f"{text} on {device}" if device else text


def main(argv=None):
    print_summary(run(parse_args(argv)))


if __name__ == "__main__":
    main()
