"""Export a trained `.keras` model as a SavedModel that TensorFlow Serving loads.

    python export/export_model.py --model runs/mf.keras --name movielens --base serving
    python export/export_model.py --model runs/dlrm.keras --name criteo --base serving

Writes `BASE/NAME/VERSION/` (a new integer version, never overwriting one,
written to a temporary folder and renamed) with a `serving_default`
signature on raw features, warm-up requests in `assets.extra/`, and
`BASE/models.config` for `tensorflow_model_server --model_config_file`.
"""

import argparse
import os

os.environ["KERAS_BACKEND"] = "tensorflow"  # export needs the TF backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_mixed_dim.export import write_models_config  # noqa: E402
from keras_mixed_dim.export.from_file import export_keras_file  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a .keras file")
    parser.add_argument("--name", required=True, help="model name (folder under BASE)")
    parser.add_argument("--base", required=True, help="model base folder")
    parser.add_argument("--version", type=int, help="default: newest + 1")
    parser.add_argument("--serving-base", default="/models",
                        help="BASE as TF Serving sees it, for models.config")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip assets.extra/tf_serving_warmup_requests")
    args = parser.parse_args(argv)
    report, kind = export_keras_file(args.model, args.base, args.name, args.version,
                                     warmup=not args.no_warmup)
    config = write_models_config(args.base, args.serving_base)
    mib = 1 / 2**20
    print(f"exported {kind} model to {report.path} (version {report.version})")
    print(f"  embedding tables   {report.embedding_bytes * mib:10.3f} MiB")
    print(f"  other variables    {report.other_variable_bytes * mib:10.3f} MiB")
    print(f"  vocabulary tables  {report.vocabulary_bytes * mib:10.3f} MiB")
    print(f"  variables/ on disk {report.variables_dir_bytes * mib:10.3f} MiB")
    print(f"  TF Serving config  {config}")


if __name__ == "__main__":
    main()
