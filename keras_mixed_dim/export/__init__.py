"""SavedModel export for TensorFlow Serving (TensorFlow-only package).

`export_for_serving` exports any Keras model, with an optional preprocessing
function, as a versioned TF Serving folder; `write_models_config` writes
`models.config`. Dataset-specific preprocessing lives with each dataset
(`keras_mixed_dim.datasets.criteo.preprocessing`,
`keras_mixed_dim.datasets.movielens.preprocessing`).
"""

from keras_mixed_dim.export.bags import RaggedBagInputs
from keras_mixed_dim.export.bags import ragged_request
from keras_mixed_dim.export.config import models_config_text
from keras_mixed_dim.export.config import write_models_config
from keras_mixed_dim.export.savedmodel import ExportReport
from keras_mixed_dim.export.savedmodel import export_for_serving
from keras_mixed_dim.export.versions import MAX_VERSION
from keras_mixed_dim.export.versions import clean_stale_partials
from keras_mixed_dim.export.versions import write_version
from keras_mixed_dim.export.warmup import write_warmup_requests

__all__ = [
    "ExportReport",
    "MAX_VERSION",
    "RaggedBagInputs",
    "clean_stale_partials",
    "export_for_serving",
    "models_config_text",
    "ragged_request",
    "write_models_config",
    "write_version",
    "write_warmup_requests",
]
