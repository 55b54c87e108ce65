"""SavedModel export for TensorFlow Serving (TensorFlow-only package)."""

from keras_mixed_dim.export.savedmodel import ExportReport
from keras_mixed_dim.export.savedmodel import export_criteo
from keras_mixed_dim.export.savedmodel import export_movielens
from keras_mixed_dim.export.savedmodel import write_models_config
from keras_mixed_dim.export.savedmodel import write_version
from keras_mixed_dim.export.warmup import write_warmup_requests

__all__ = [
    "ExportReport",
    "export_criteo",
    "export_movielens",
    "write_models_config",
    "write_version",
    "write_warmup_requests",
]
