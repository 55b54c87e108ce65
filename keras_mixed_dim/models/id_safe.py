"""`IdSafeModel`: a functional model that keeps id inputs from wrapping.

Keras converts every input to its `keras.Input` dtype before any layer runs:
an int64 id `2**32 + 5` fed to an int32 input becomes `5`, and JAX without
x64 truncates int64 arrays to int32 the same way. No layer can see the
original value, so the check has to happen on the host, before Keras's
conversion. `IdSafeModel` does it for numpy inputs of `fit`, `evaluate`,
`predict`, the `*_on_batch` methods and direct calls. Tensors and
`tf.data` pipelines you build yourself are beyond its reach: cast ids to
int32 only after checking them (the package's Criteo pipeline produces
int32 indices from a vocabulary, which cannot wrap).
"""

import keras
import numpy as np
from keras import saving

from keras_mixed_dim.optimizers.sparse_rows import sparse_row_train_step

_INT32 = np.iinfo(np.int32)


def sanitize_id_array(values, dtype="int32"):
    """Numpy ids with every value the `dtype` cast would corrupt set to -1.

    Integers outside the int32 range and floats that are not finite whole
    numbers become -1 (an out-of-range id: zeros from every layer of the
    package). Other values are unchanged.

    Args:
        values: Ids as a numpy array (or anything `np.asarray` takes).
        dtype: The integer dtype the ids will be cast to.

    Returns:
        A numpy array of `dtype`, or `values` as an array unchanged when they are
        neither integers nor floats.

    Example:

    >>> sanitize_id_array(np.array([3, 2**32 + 5, -7], "int64"))
    array([ 3, -1, -7], dtype=int32)
    """
    array = np.asarray(values)
    if array.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(array) | (array != np.floor(array))
            bad |= (array < _INT32.min) | (array > _INT32.max)
    elif array.dtype.kind in "iu":
        bad = (array < _INT32.min) | (array > _INT32.max)
    else:
        return array
    return np.where(bad, -1, array).astype(dtype)


@saving.register_keras_serializable(package="keras_mixed_dim")
class IdSafeModel(keras.Model):
    """A functional `keras.Model` whose integer inputs are checked on the host.

    Build it like `keras.Model(inputs, outputs)`. For every input declared
    with an integer dtype, numpy values that the cast to that dtype would
    wrap (int64 beyond int32, NaN or fractional floats) become -1 first, so
    embedding layers see an out-of-range id (zeros) instead of another id's
    row. The package's MF, NCF and DLRM builders return this class.

    Its train step on JAX and PyTorch gives a `SparseRowOptimizer` the rows
    the batch gathered instead of dense table gradients (see
    `keras_mixed_dim.optimizers.enable_sparse_row_steps`).

    Args:
        *args, **kwargs: As for `keras.Model` (functional: `inputs`, `outputs`,
            `name`).

    Example:

    >>> ids = keras.Input((), dtype="int32")
    >>> out = keras.layers.Dense(1)(MixedDimEmbedding(1000, 8)(ids))
    >>> model = IdSafeModel(ids, out)
    >>> model.predict(np.array([3, 2**32 + 5]), verbose=0).shape  # 2**32 + 5 -> -1
    (2, 1)
    """

    def _integer_inputs(self):
        return [(tensor.name, tensor.dtype) for tensor in self.inputs
                if "int" in str(tensor.dtype)]

    def sanitize_inputs(self, x):
        """Returns `x` with its integer-input numpy leaves sanitized."""
        if x is None or getattr(self, "_inputs_struct", None) is None:
            return x
        integer = dict(self._integer_inputs())
        if not integer:
            return x

        def clean(value, dtype):
            if isinstance(value, (np.ndarray, list, tuple, np.generic, int, float)):
                return sanitize_id_array(value, dtype)
            return value

        if isinstance(x, dict):
            return {k: clean(v, integer[k]) if k in integer else v for k, v in x.items()}
        names = [tensor.name for tensor in self.inputs]
        if isinstance(x, (list, tuple)) and len(x) == len(names) and len(names) > 1:
            return type(x)(clean(v, integer[n]) if n in integer else v
                           for n, v in zip(names, x))
        if len(names) == 1 and names[0] in integer:
            return clean(x, integer[names[0]])
        return x

    def fit(self, x=None, y=None, *args, **kwargs):
        if "validation_data" in kwargs and isinstance(kwargs["validation_data"], tuple):
            data = kwargs["validation_data"]
            kwargs["validation_data"] = (self.sanitize_inputs(data[0]), *data[1:])
        return super().fit(self.sanitize_inputs(x), y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        return super().evaluate(self.sanitize_inputs(x), y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        return super().predict(self.sanitize_inputs(x), *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        return super().train_on_batch(self.sanitize_inputs(x), y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        return super().test_on_batch(self.sanitize_inputs(x), y, *args, **kwargs)

    def predict_on_batch(self, x):
        return super().predict_on_batch(self.sanitize_inputs(x))

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(self.sanitize_inputs(inputs), *args, **kwargs)

    def train_step(self, *args):
        # JAX and PyTorch: with a SparseRowOptimizer the tables are
        # differentiated by the rows the layers gather (TensorFlow's
        # IndexedSlices already are); otherwise Keras's own step.
        return sparse_row_train_step(self, super().train_step, *args)

    train_step.sparse_row_step = True
