"""keras-mixed-dim: compressed embeddings for Keras 3 recommenders.

Importing the package registers its layers with Keras, so a saved `.keras`
model loads after `import keras_mixed_dim`. The planner
(`keras_mixed_dim.planning`) and the sketches are numpy code that never
import Keras themselves.
"""

__version__ = "0.2.0"

from keras_mixed_dim import _moved  # noqa: E402

_moved.install()

from keras_mixed_dim.frequency import FrequencyRecount  # noqa: E402
from keras_mixed_dim.layers import DotInteraction  # noqa: E402
from keras_mixed_dim.layers import MixedDimEmbedding  # noqa: E402
from keras_mixed_dim.models import IdSafeModel  # noqa: E402
# registered for loading: a model compiled with the sparse optimizer or
# holding a stacked layer loads after `import keras_mixed_dim`
from keras_mixed_dim.layers import stacked_embedding as _stacked  # noqa: E402,F401
from keras_mixed_dim.optimizers import sparse_rows as _sparse_rows  # noqa: E402,F401

__all__ = [
    "__version__",
    "DotInteraction",
    "FrequencyRecount",
    "IdSafeModel",
    "MixedDimEmbedding",
]
