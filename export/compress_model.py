"""Compress a trained `.keras` model: Embedding tables -> mixed-dimension ones.

    python export/compress_model.py --model runs/mf.keras \
        --data /path/to/ml-100k --budget-fraction 0.125 --out runs/mf_md.keras \
        [--fine-tune-epochs 1] [--quantize int8]

    python export/compress_model.py --model model.keras --counts counts.npz \
        --budget-fraction 0.125 --out small.keras

Per-id counts come from `--data`, a MovieLens folder or ratings file for an
MF / NCF model saved by `examples/movielens.py --save` (ids are encoded with
the `STEM.vocab/` set saved beside the model, and counted on the training
split that example uses), or from `--counts`, an `.npz` file with one array
per Embedding layer name (for a stacked DLRM, per feature name of its
`StackedEmbedding`, e.g. `embedding_0`). With `--data`, the test MSE is printed before and
after conversion, and `--fine-tune-epochs` trains the converted model on the
training split. Outputs are written atomically: `OUT`, `OUT_STEM.vocab/`
(the vocabularies, bound to `OUT` for `export/export_model.py`) and
`OUT_STEM.compress.json` (the report).
"""

import argparse
import os
import pathlib


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="the trained .keras model")
    parser.add_argument("--out", required=True, help="where to write the .keras result")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="MovieLens folder or ratings file (MF / NCF)")
    source.add_argument("--counts", help=".npz with per-id counts per layer name")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-fraction", type=float,
                        help="each new layer's bytes as a fraction of its table's "
                        "float32 bytes, every array counted (default 0.125)")
    budget.add_argument("--budget-bytes", type=float,
                        help="each new layer's bytes, every array counted")
    budget.add_argument("--budget", type=float,
                        help="deprecated (removed in 0.4.0): a fraction (< 1) of "
                        "each table's bytes, or bytes; use --budget-fraction or "
                        "--budget-bytes")
    parser.add_argument("--method", default="mixed",
                        help="an embedding kind with a converter "
                        "(keras_mixed_dim.compress.COMPRESSION_METHODS; 'md' is "
                        "the deprecated name of 'mixed')")
    parser.add_argument("--layers", nargs="+", help="Embedding layer names "
                        "(default: every Embedding of >= --min-rows rows)")
    parser.add_argument("--min-rows", type=int, default=1000)
    parser.add_argument("--alpha", default="auto", help="power-rule alpha or 'auto'")
    parser.add_argument("--num-blocks", type=int, default=4)
    parser.add_argument("--sketch", default="none",
                        help="sketch for blocks of > 1M rows: none (exact Gram), "
                        "osnap, gaussian, countsketch")
    parser.add_argument("--keep-id-order", action="store_true",
                        help="ids are ranked by frequency already: cut blocks in "
                        "id order and store no id -> rank table")
    parser.add_argument("--fine-tune-epochs", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--quantize", choices=("int8", "float16"),
                        help="store the block tables quantized, after fine-tuning")
    split = parser.add_argument_group("MovieLens split (as examples/movielens.py)")
    split.add_argument("--split-seed", type=int, default=0)
    split.add_argument("--test-fraction", type=float, default=0.1)
    split.add_argument("--val-fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    if not args.out.endswith(".keras"):
        parser.error(f"--out must end in .keras, got {args.out!r}")
    if args.fine_tune_epochs < 0:
        parser.error("--fine-tune-epochs must be >= 0")
    if args.fine_tune_epochs and not args.data:
        parser.error("--fine-tune-epochs needs --data to train on")
    if args.alpha != "auto":
        try:
            args.alpha = float(args.alpha)
        except ValueError:
            parser.error(f"--alpha must be a number or 'auto', got {args.alpha!r}")
    if args.sketch == "none":
        args.sketch = None
    return args


def movielens_data(args, model):
    """Encoded `(train, test)` splits and per-layer counts from `--data`."""
    import numpy as np

    from keras_mixed_dim.datasets import Vocabulary
    from keras_mixed_dim.datasets.movielens import read_ratings
    from keras_mixed_dim.datasets.movielens.ratings import split_random

    from keras_mixed_dim.datasets.movielens.vocabulary import load_vocabularies

    vocab_path = pathlib.Path(args.model[: -len(".keras")] + ".vocab")
    if not vocab_path.is_dir():
        raise SystemExit(
            f"error: {vocab_path} not found. --data needs the user / item "
            "vocabularies that examples/movielens.py --save writes beside the model."
        )
    users, items, _ = load_vocabularies(vocab_path)
    vocab = {"user": users.tokens, "item": items.tokens}
    names = {tensor.name.split(":")[0] for tensor in model.inputs}
    if not {"user", "item"} <= names:
        raise SystemExit(
            f"error: --data is for MovieLens MF / NCF models with inputs 'user' and "
            f"'item'; this model's inputs are {sorted(names)}. Use --counts."
        )
    ratings = read_ratings(args.data)
    parts = split_random(len(ratings), args.test_fraction, args.val_fraction,
                         seed=args.split_seed)
    vocabularies = {}
    for key in ("user", "item"):
        tokens = np.asarray(vocab[key])
        vocabularies[key] = Vocabulary(tokens, np.zeros(len(tokens), np.int64))

    def encode(index):
        part = ratings.subset(index)
        return ({"user": vocabularies["user"].lookup(part.users),
                 "item": vocabularies["item"].lookup(part.items)}, part.ratings)

    train, val, test = (encode(index) for index in parts)
    counts = {}
    for key in ("user", "item"):
        name = f"{key}_embedding"
        try:
            rows = model.get_layer(name).input_dim
        except ValueError:
            continue
        counts[name] = np.bincount(train[0][key], minlength=rows)[:rows]
    return train, val, test, counts


def main(argv=None):
    args = parse_args(argv)
    import keras
    import numpy as np
    from tqdm.auto import tqdm

    import keras_mixed_dim.layers  # noqa: F401  (registers the custom layers)
    from keras_mixed_dim.compress import compress_model
    from keras_mixed_dim.compress import embedding_layers
    from keras_mixed_dim.compress.model import stacked_uniform_features
    from keras_mixed_dim.io_utils import atomic_save_model
    from keras_mixed_dim.io_utils import atomic_write_json
    from keras_mixed_dim.io_utils import load_model_file

    if not pathlib.Path(args.model).is_file():
        raise SystemExit(f"error: no model file at {args.model}")
    try:
        model = load_model_file(args.model)
    except ValueError as error:  # a truncated or damaged .keras file
        raise SystemExit(f"error: {error}") from None
    # (name, rows, width) of every table compress_model can convert: the
    # Embedding layers and the uniform features of stacked layers (a stacked
    # DLRM's, the default layout), named by their feature names
    tables = {layer.name: (layer.input_dim, layer.output_dim)
              for layer in embedding_layers(model)}
    for name, (layer, f) in stacked_uniform_features(model).items():
        tables.setdefault(name, (int(layer.input_dims[f]), layer.output_dim))
    if not tables:
        raise SystemExit(
            f"error: {args.model} has no keras.layers.Embedding layer (or uniform "
            "StackedEmbedding feature); there is nothing to compress."
        )
    train = test = None
    if args.data:
        train, _, test, counts = movielens_data(args, model)
    else:
        try:
            file = np.load(args.counts)
        except FileNotFoundError:
            raise SystemExit(f"error: no counts file at {args.counts}") from None
        except (OSError, ValueError) as error:  # a text, pickle or damaged file
            raise SystemExit(
                f"error: {args.counts} is not a valid .npz counts file ({error})"
            ) from None
        if not hasattr(file, "files"):  # a single .npy array
            raise SystemExit(
                f"error: {args.counts} holds one array; --counts needs an .npz "
                "with one array per layer name (numpy.savez(path, name=counts))"
            )
        with file:
            counts = {name: file[name] for name in file.files}

    def mse(m):
        prediction = m.predict(test[0], batch_size=4096, verbose=0).reshape(-1)
        return float(np.mean((prediction - test[1]) ** 2))

    budget = {}
    if args.budget is not None:
        # compress_model warns and reads it as before
        budget["budget"] = args.budget
    elif args.budget_bytes is not None:
        budget["budget_bytes"] = args.budget_bytes
    else:
        budget["budget_fraction"] = (0.125 if args.budget_fraction is None
                                     else args.budget_fraction)
    results = {"model": args.model, **budget, "method": args.method}
    if test is not None:
        results["mse_original"] = mse(model)
        print(f"test MSE, original:        {results['mse_original']:.5f}")

    selected = args.layers or [
        name for name, (rows, width) in tables.items()
        if rows >= args.min_rows and width > 1]
    total_rows = sum(tables[name][0] for name in selected if name in tables)
    with tqdm(total=total_rows, unit="rows", desc="converting") as bar:
        state = {"layer": None, "done": 0}

        def progress(name, done, total):
            if name != state["layer"]:
                state.update(layer=name, done=0)
                bar.set_postfix_str(name)
            bar.update(done - state["done"])
            state["done"] = done

        options = {"num_blocks": args.num_blocks, "alpha": args.alpha,
                   "sketch": args.sketch, "keep_id_order": args.keep_id_order
                   } if args.method in ("mixed", "md") else {}
        try:
            new_model, report = compress_model(
                model, counts, method=args.method, **budget,
                layer_names=args.layers, min_rows=args.min_rows,
                progress=progress, **options)
        except ValueError as error:
            raise SystemExit(f"error: {error}")
    print(report)
    results["layers"] = [
        {"name": entry.name, "bytes_before": entry.bytes_before,
         "bytes_after": entry.bytes_after,
         "alpha": getattr(entry.details, "alpha", None),
         "weighted_error": getattr(entry.details, "weighted_error", None),
         "blocks": [vars(b) for b in getattr(entry.details, "blocks", [])]}
        for entry in report.layers
    ]
    if test is not None:
        results["mse_converted"] = mse(new_model)
        print(f"test MSE, converted:       {results['mse_converted']:.5f}")
    if args.fine_tune_epochs:
        optimizer = (keras.optimizers.deserialize(keras.optimizers.serialize(
            model.optimizer)) if getattr(model, "optimizer", None) else "adam")
        new_model.compile(optimizer=optimizer, loss="mse")
        new_model.fit(train[0], train[1], epochs=args.fine_tune_epochs,
                      batch_size=args.batch_size, verbose=1)
        results["mse_fine_tuned"] = mse(new_model)
        print(f"test MSE, fine-tuned:      {results['mse_fine_tuned']:.5f}")
    if args.quantize:
        from keras_mixed_dim.compress import quantize_model

        new_model, quantized = quantize_model(new_model, args.quantize)
        results["quantize"] = args.quantize
        results["bytes_quantized"] = quantized.bytes_after
        print(f"{args.quantize} block tables: {quantized.bytes_before:,} -> "
              f"{quantized.bytes_after:,} embedding bytes")
        if test is not None:
            results["mse_quantized"] = mse(new_model)
            print(f"test MSE, {args.quantize}:  {results['mse_quantized']:.5f}")
    atomic_save_model(new_model, args.out)
    out_stem = args.out[: -len(".keras")]
    vocab = pathlib.Path(args.model[: -len(".keras")] + ".vocab")
    if vocab.is_dir():
        # the same vocabularies, bound to the new model file
        from keras_mixed_dim.datasets.movielens.vocabulary import load_vocabularies
        from keras_mixed_dim.datasets.movielens.vocabulary import save_vocabularies
        from keras_mixed_dim.io_utils import file_sha256

        users, items, manifest = load_vocabularies(vocab)
        save_vocabularies(out_stem + ".vocab", users, items,
                          meta={**manifest.get("meta", {}),
                                "model_sha256": file_sha256(args.out)})
    atomic_write_json(out_stem + ".compress.json", results)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
