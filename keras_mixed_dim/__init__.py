"""keras-mixed-dim: mixed-dimension embeddings for Keras 3.

`keras_mixed_dim.planning` is numpy only; Keras is imported on first use of a
layer or callback, so planning tools work without a Keras backend.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "MixedDimEmbedding": "keras_mixed_dim.layers",
    "DotInteraction": "keras_mixed_dim.layers",
    "FrequencyRecount": "keras_mixed_dim.frequency",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_mixed_dim' has no attribute {name!r}")
