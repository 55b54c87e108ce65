"""Export a saved `.keras` file (trained on any backend) with its vocabularies."""

import json
import pathlib

import keras
import numpy as np

import keras_mixed_dim.layers  # noqa: F401  (registers the custom layers)
from keras_mixed_dim.datasets.criteo.format import NUM_CATEGORICAL
from keras_mixed_dim.export.savedmodel import export_criteo
from keras_mixed_dim.export.savedmodel import export_movielens


def model_kind(model):
    """`"criteo"` or `"movielens"` from the model's input names."""
    names = {tensor.name.split(":")[0] for tensor in model.inputs}
    names |= set(getattr(model, "input_names", None) or [])
    if {"dense", "categorical"} <= names:
        return "criteo"
    if {"user", "item"} <= names:
        return "movielens"
    raise ValueError(
        f"Cannot tell the model kind from its inputs {sorted(names)}: expected "
        "dense + categorical (Criteo DLRM) or user + item (MovieLens)."
    )


def export_keras_file(model_path, base, name, version=None, warmup=True):
    """Loads `model_path` under the TensorFlow backend and exports it.

    The vocabularies are read from beside the model, where the examples'
    `--save` writes them: `STEM.vocab.json` (MovieLens user / item ids) or
    `STEM.vocab/` (Criteo value files). A Criteo model without one (trained
    on synthetic ids) is exported with integer-id inputs.

    Returns:
        `(ExportReport, kind)`.
    """
    model_path = pathlib.Path(model_path)
    if model_path.suffix != ".keras" or not model_path.is_file():
        raise FileNotFoundError(f"No .keras model at {model_path}.")
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("Export needs KERAS_BACKEND=tensorflow.")
    model = keras.models.load_model(model_path)
    kind = model_kind(model)
    stem = str(model_path)[: -len(".keras")]
    if kind == "movielens":
        vocab_path = pathlib.Path(stem + ".vocab.json")
        if not vocab_path.is_file():
            raise FileNotFoundError(
                f"{vocab_path} not found: the MovieLens export needs the user and "
                "item vocabularies that examples/movielens.py --save writes."
            )
        vocab = json.loads(vocab_path.read_text())
        users, items = vocab["user"], vocab["item"]
        sample = {"user_id": np.asarray(users[:4]), "item_id": np.asarray(items[:4])}
        report = export_movielens(model, base, name, users, items, version,
                                  warmup=sample if warmup else None)
        return report, kind
    from keras_mixed_dim.datasets.criteo.vocabulary import CriteoVocabulary

    vocab_dir = pathlib.Path(stem + ".vocab")
    vocabulary = CriteoVocabulary.load(vocab_dir) if vocab_dir.is_dir() else None
    dense = np.array([[1, 2, 0, np.nan, 5, 0, 1, 3, 4, 1, 0, 2, 7]] * 4, np.float32)
    if vocabulary is not None:
        categorical = np.array(
            [[t[0] if t else "" for t in vocabulary.tokens]] * 4, dtype=object)
    else:
        categorical = np.zeros((4, NUM_CATEGORICAL), np.int32)
    report = export_criteo(model, base, name, vocabulary, version,
                           warmup={"dense": dense, "categorical": categorical}
                           if warmup else None)
    return report, kind
