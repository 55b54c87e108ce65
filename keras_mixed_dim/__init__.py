"""keras-mixed-dim: compressed embeddings for Keras 3 recommenders.

Importing the package registers its layers and optimizers with Keras, so a
saved `.keras` model loads after `import keras_mixed_dim`. The planner
(`keras_mixed_dim.planning`) and the sketches (`keras_mixed_dim.sketch`) are
numpy code that never import Keras themselves.
"""

__version__ = "0.2.0"

from keras_mixed_dim.budgets import embedding_bytes  # noqa: E402
from keras_mixed_dim.frequency import FrequencyRecount  # noqa: E402
from keras_mixed_dim.layers import ApproxActivationDense  # noqa: E402
from keras_mixed_dim.layers import DotInteraction  # noqa: E402
from keras_mixed_dim.layers import DynamicEmbedding  # noqa: E402
from keras_mixed_dim.layers import HashedMemoryEmbedding  # noqa: E402
from keras_mixed_dim.layers import HashingEmbedding  # noqa: E402
from keras_mixed_dim.layers import MixedDimEmbedding  # noqa: E402
from keras_mixed_dim.layers import QREmbedding  # noqa: E402
from keras_mixed_dim.layers import QuantizedMixedDimEmbedding  # noqa: E402
from keras_mixed_dim.layers import QuantizedStackedEmbedding  # noqa: E402
from keras_mixed_dim.layers import SharedMemory  # noqa: E402
from keras_mixed_dim.layers import StackedEmbedding  # noqa: E402
from keras_mixed_dim.layers import approximate_activations  # noqa: E402
from keras_mixed_dim.layers import lsh_signatures  # noqa: E402
from keras_mixed_dim.models import IdSafeModel  # noqa: E402
from keras_mixed_dim.optimizers import LowRankGradients  # noqa: E402
from keras_mixed_dim.optimizers import SparseRowOptimizer  # noqa: E402
from keras_mixed_dim.optimizers import dense_memory_options  # noqa: E402

__all__ = [
    "__version__",
    "ApproxActivationDense",
    "DotInteraction",
    "DynamicEmbedding",
    "FrequencyRecount",
    "HashedMemoryEmbedding",
    "HashingEmbedding",
    "IdSafeModel",
    "LowRankGradients",
    "MixedDimEmbedding",
    "QREmbedding",
    "QuantizedMixedDimEmbedding",
    "QuantizedStackedEmbedding",
    "SharedMemory",
    "SparseRowOptimizer",
    "StackedEmbedding",
    "approximate_activations",
    "dense_memory_options",
    "embedding_bytes",
    "lsh_signatures",
]
