"""`models.config` for `tensorflow_model_server --model_config_file`."""

import pathlib

from keras_mixed_dim.io_utils import atomic_write_text


def models_config_text(names, serving_base="/models"):
    """The `ModelServerConfig` text for `names`, written with the protobuf
    text format of `tensorflow-serving-api` (names are escaped, fields
    checked by the schema).

    Args:
        names: Model names.
        serving_base: The folder holding the models as TF Serving sees it.

    Returns:
        The text of `models.config`.

    Example:

    >>> print(models_config_text(["dlrm"]))                 # doctest: +SKIP
    """
    try:
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError as error:
        raise ImportError(
            "models.config needs the TF Serving protos: "
            'pip install "keras-mixed-dim[serving]"') from error
    config = model_server_config_pb2.ModelServerConfig()
    for name in names:
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = f"{serving_base.rstrip('/')}/{name}"
        entry.model_platform = "tensorflow"
    return text_format.MessageToString(config)


def write_models_config(base, serving_base="/models"):
    """Writes `BASE/models.config` listing every model folder under `base`
    that holds at least one version, with base paths as TF Serving sees them
    (`SERVING_BASE/NAME`, `/models/NAME` in the TF Serving container).

    Args:
        base: The model base folder.
        serving_base: The folder holding the models as TF Serving sees it.

    Returns:
        The path of `models.config`.

    Example:

    >>> write_models_config("/tmp/models")                  # doctest: +SKIP
    """
    base = pathlib.Path(base)
    names = sorted(
        p.name for p in base.iterdir()
        if p.is_dir() and not p.name.startswith(".")
        and any(v.name.isascii() and v.name.isdigit() for v in p.iterdir()))
    path = base / "models.config"
    atomic_write_text(path, models_config_text(names, serving_base))
    return path
