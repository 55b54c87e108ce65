"""Export a trained `.keras` model as a SavedModel that TensorFlow Serving loads.

    python export/export_model.py --model runs/mf.keras --name movielens --base serving
    python export/export_model.py --model runs/dlrm.keras --name criteo --base serving

Knows the examples' two model families: a DLRM from `examples/criteo.py`
(inputs `dense`, `categorical`) and an MF / NCF model from
`examples/movielens.py` (inputs `user`, `item`). Their `--save` writes the
vocabularies beside the model (`STEM.vocab/`), bound to it by the model
file's SHA-256; a vocabulary written for another model file is refused, as
is one whose sizes do not match the model's tables.

Writes `BASE/NAME/VERSION/` (a new integer version, never overwriting one,
written to a temporary folder and renamed) with a `serving_default`
signature on raw features, the vocabularies as SavedModel assets, warm-up
requests in `assets.extra/`, and `BASE/models.config` for
`tensorflow_model_server --model_config_file`.
"""

import argparse
import os
import pathlib
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"  # export needs the TF backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# TF Serving stores versions as int64 (keras_mixed_dim.export.MAX_VERSION);
# the arguments are checked before the slow TensorFlow import.
MAX_VERSION = 2**63 - 1


def model_kind(model):
    """`"criteo"` or `"movielens"` from the model's input names."""
    names = {tensor.name.split(":")[0] for tensor in model.inputs}
    if {"dense", "categorical"} <= names:
        return "criteo"
    if {"user", "item"} <= names:
        return "movielens"
    raise ValueError(
        f"Cannot tell the model kind from its inputs {sorted(names)}: expected "
        "dense + categorical (Criteo DLRM) or user + item (MovieLens). Export "
        "other models with keras_mixed_dim.export.export_for_serving.")


def vocabulary_folder(model_path):
    """Where the examples' `--save` puts the vocabularies of `model_path`."""
    return pathlib.Path(str(model_path)[: -len(".keras")] + ".vocab")


def check_binding(model_path, manifest, folder):
    """Refuses a vocabulary set written for another model file."""
    from keras_mixed_dim.io_utils import file_sha256

    expected = manifest.get("meta", {}).get("model_sha256")
    if expected is None:
        raise ValueError(
            f"{folder} does not say which model it belongs to; save the model "
            "again with the example's --save.")
    if expected != file_sha256(model_path):
        raise ValueError(
            f"{folder} was written for another version of {model_path} (the model "
            "file's SHA-256 differs): the model and its vocabularies do not "
            "match, perhaps after an interrupted --save. Save them again.")


def preprocessing_for(model, model_path, kind):
    """`(preprocess, output name, warm-up request)` for an example model."""
    import numpy as np

    folder = vocabulary_folder(model_path)
    if kind == "movielens":
        from keras_mixed_dim.datasets.movielens.preprocessing import MovieLensPreprocessing
        from keras_mixed_dim.datasets.movielens.vocabulary import load_vocabularies

        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} not found: the MovieLens export needs the user and item "
                "vocabularies that examples/movielens.py --save writes.")
        users, items, manifest = load_vocabularies(folder)
        check_binding(model_path, manifest, folder)
        preprocess = MovieLensPreprocessing(
            folder / "user.tsv", folder / "item.tsv", manifest["key_dtype"])
        warmup = {"user_id": np.asarray(users.tokens[:4]),
                  "item_id": np.asarray(items.tokens[:4])}
        if manifest["key_dtype"] == "int64":
            warmup = {k: v.astype(np.int64) for k, v in warmup.items()}
        return preprocess, "rating", warmup
    from keras_mixed_dim.datasets.criteo.preprocessing import CriteoPreprocessing
    from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary

    vocabulary = None
    if folder.exists():
        vocabulary = CriteoVocabulary.load(folder)
        check_binding(model_path, CriteoVocabulary.read_header(folder, verify=False),
                      folder)
    preprocess = CriteoPreprocessing(vocabulary)
    return preprocess, "probability", preprocess.warmup_inputs(vocabulary)


def export_keras_file(model_path, base, name, version=None, warmup=True):
    """Loads an example's `.keras` model and exports it with its vocabularies.

    Returns:
        `(ExportReport, kind)`.
    """
    from keras_mixed_dim.export import export_for_serving
    from keras_mixed_dim.io_utils import load_model_file

    model = load_model_file(model_path)
    kind = model_kind(model)
    preprocess, output, request = preprocessing_for(model, model_path, kind)
    report = export_for_serving(model, base, name, preprocess=preprocess,
                                output_names=output, version=version,
                                warmup=request if warmup else None)
    return report, kind


def _version(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= MAX_VERSION:
        raise argparse.ArgumentTypeError(
            f"must be in [1, {MAX_VERSION}] (TF Serving versions are int64), got {text}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a .keras file")
    parser.add_argument("--name", required=True, help="model name (folder under BASE)")
    parser.add_argument("--base", required=True, help="model base folder")
    parser.add_argument("--version", type=_version, help="default: newest + 1")
    parser.add_argument("--serving-base", default="/models",
                        help="BASE as TF Serving sees it, for models.config")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip assets.extra/tf_serving_warmup_requests")
    args = parser.parse_args(argv)
    from keras_mixed_dim.export import write_models_config
    from keras_mixed_dim.io_utils import InvalidModelFileError

    try:
        report, kind = export_keras_file(args.model, args.base, args.name,
                                         args.version, warmup=not args.no_warmup)
    except (ValueError, FileNotFoundError, FileExistsError,
            InvalidModelFileError) as error:
        sys.exit(f"export_model.py: error: {error}")
    config = write_models_config(args.base, args.serving_base)
    mib = 1 / 2**20
    print(f"exported {kind} model to {report.path} (version {report.version})")
    print(f"  embedding tables   {report.embedding_bytes * mib:10.3f} MiB")
    print(f"  other variables    {report.other_variable_bytes * mib:10.3f} MiB")
    print(f"  vocabulary tables  {report.vocabulary_bytes * mib:10.3f} MiB")
    print(f"  variables/ on disk {report.variables_dir_bytes * mib:10.3f} MiB")
    print(f"  assets/ on disk    {report.assets_bytes * mib:10.3f} MiB")
    print(f"  saved_model.pb     {report.saved_model_bytes * mib:10.3f} MiB")
    print(f"  TF Serving config  {config}")


if __name__ == "__main__":
    main()
