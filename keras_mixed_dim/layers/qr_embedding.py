"""`QREmbedding`: quotient-remainder compositional embeddings
(Shi, Mudigere, Naumov, Yang, arXiv:1909.02107)."""

import math

from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers
from keras import saving

from keras_mixed_dim.backend import take_rows
from keras_mixed_dim.backend.row_gradients import flag_table
from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.layers.lookup import IdLookupLayer

OPERATIONS = ("mult", "add", "concat")

# Standard deviation of `keras.layers.Embedding`'s default init,
# RandomUniform(-0.05, 0.05): the scale the combined vector starts at.
EMBEDDING_STD = 0.05 / math.sqrt(3.0)


def qr_shapes(input_dim, output_dim, num_collisions=None, operation="mult"):
    """`((quotient_rows, quotient_dim), (remainder_rows, remainder_dim))`."""
    m = default_collisions(input_dim) if num_collisions is None else int(num_collisions)
    if operation == "concat":
        dims = ((output_dim + 1) // 2, output_dim // 2)
    else:
        dims = (output_dim, output_dim)
    return ((-(-input_dim // m), dims[0]), (m, dims[1]))


def default_collisions(input_dim):
    """`ceil(sqrt(n))`: the fewest rows in all (`n / m + m` is least there)."""
    return max(1, math.isqrt(input_dim - 1) + 1) if input_dim > 1 else 1


def qr_params(input_dim, output_dim, num_collisions=None, operation="mult"):
    (qr, qd), (rr, rd) = qr_shapes(input_dim, output_dim, num_collisions, operation)
    return qr * qd + rr * rd


@saving.register_keras_serializable(package="keras_mixed_dim")
class QREmbedding(IdLookupLayer):
    """Quotient-remainder embedding: two small tables instead of one big one.

    Id `i` reads row `i // m` of a quotient table (`ceil(n / m)` rows) and row
    `i % m` of a remainder table (`m` rows) and combines them by element-wise
    product (`"mult"`), sum (`"add"`) or concatenation (`"concat"`, each
    table then `output_dim / 2` wide). No two ids get the same pair of rows,
    so every id has its own vector, yet the layer stores about
    `2 sqrt(n) x output_dim` floats (Shi et al., "Compositional Embeddings
    Using Complementary Partitions for Memory-Efficient Recommendation
    Systems", arXiv:1909.02107). Quotient and remainder are integer
    `floor_divide` / `mod`, exact for every id below 2**31.

    Initialization: by default both tables are zero-mean uniform, scaled so
    the *combined* vector has the standard deviation of
    `keras.layers.Embedding`'s default init (uniform in [-0.05, 0.05], std
    0.0289). For `"mult"` each table has std `sqrt(0.0289)` (a product of two
    independent zero-mean values has the product of their variances); for
    `"add"` each has std `0.0289 / sqrt(2)`; for `"concat"` each is the
    standard init. The reference code draws both tables from
    `uniform(0, ...)`-like positive ranges, which makes every initial vector
    point the same way and gives "add" a large common offset; zero-mean
    tables avoid that. Pass `embeddings_initializer` to use one initializer
    for both tables instead.

    Example:

    >>> layer = QREmbedding(1_000_000, 16)   # m = 1000: 2 x 1000 x 16 floats
    >>> layer(np.array([[3], [999_999]])).shape
    (2, 1, 16)

    Ids outside `[0, input_dim)` give all-zero vectors and no gradient;
    string or boolean ids raise a `TypeError` (the rule of
    `keras_mixed_dim.layers.ids`).

    Args:
        input_dim: Integer. Number of ids `n`.
        output_dim: Integer. Width of the output vectors.
        num_collisions: Rows of the remainder table `m` (ids per quotient
            row); default `ceil(sqrt(n))`, the fewest parameters.
        operation: `"mult"` (default), `"add"` or `"concat"`.
        combiner: None for one vector per id, `"sum"` / `"mean"` /
            `"sqrtn"` to reduce the last id axis (padding and invalid ids
            left out; weighted as `tf.nn.safe_embedding_lookup_sparse`).
        embeddings_initializer: Optional initializer for both tables
            (default: the scaled zero-mean init described above).
        embeddings_regularizer: Regularizer for both tables.
        embeddings_constraint: Constraint for both tables.
        mask_zero: Whether id 0 is padding.
        bag_size: Optional padded width of `tf.RaggedTensor` /
            `tf.SparseTensor` bags (a longer bag keeps its first
            `bag_size` ids).
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        inputs: Integer ids of any shape (rank >= 2 with a combiner), or on
            TensorFlow a rank-2 `tf.RaggedTensor` / `tf.SparseTensor` of
            bags (needs a combiner and `bag_size`).
        weights: Optional float per-id weights of the ids' shape (ragged or
            sparse like them); needs a combiner.

    Returns:
        `inputs.shape + (output_dim,)`, or without the last id axis with a
        combiner, in the layer's compute dtype.
    """

    def __init__(self, input_dim, output_dim, num_collisions=None, operation="mult",
                 combiner=None, embeddings_initializer=None,
                 embeddings_regularizer=None, embeddings_constraint=None,
                 mask_zero=False, **kwargs):
        super().__init__(input_dim, output_dim, combiner=combiner,
                         mask_zero=mask_zero, **kwargs)
        if operation not in OPERATIONS:
            raise ValueError(
                f"`operation` must be one of {OPERATIONS}. Received: {operation!r}")
        if operation == "concat" and self.output_dim < 2:
            raise ValueError("operation='concat' needs output_dim >= 2.")
        if num_collisions is None:
            num_collisions = default_collisions(self.input_dim)
        if isinstance(num_collisions, bool) or not float(num_collisions).is_integer() or (
            not 1 <= num_collisions <= self.input_dim
        ):
            raise ValueError(
                f"`num_collisions` must be an integer in [1, input_dim="
                f"{self.input_dim}]. Received: {num_collisions!r}")
        self.num_collisions = int(num_collisions)
        self.operation = operation
        self.embeddings_initializer = (
            None if embeddings_initializer is None
            else initializers.get(embeddings_initializer))
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = constraints.get(embeddings_constraint)
        self.quotient_shape, self.remainder_shape = qr_shapes(
            self.input_dim, self.output_dim, self.num_collisions, operation)

    def _initializer(self):
        if self.embeddings_initializer is not None:
            return self.embeddings_initializer
        std = {
            "mult": math.sqrt(EMBEDDING_STD),
            "add": EMBEDDING_STD / math.sqrt(2.0),
            "concat": EMBEDDING_STD,
        }[self.operation]
        limit = std * math.sqrt(3.0)
        return initializers.RandomUniform(-limit, limit)

    def build(self, input_shape=None):
        if self.built:
            return
        initializer = self._initializer()
        self.quotient_embeddings = self.add_weight(
            shape=self.quotient_shape, initializer=initializer,
            regularizer=self.embeddings_regularizer,
            constraint=self.embeddings_constraint, name="quotient_embeddings")
        self.remainder_embeddings = self.add_weight(
            shape=self.remainder_shape, initializer=initializer,
            regularizer=self.embeddings_regularizer,
            constraint=self.embeddings_constraint, name="remainder_embeddings")
        flag_table(self.quotient_embeddings)
        flag_table(self.remainder_embeddings)
        self.built = True

    def lookup(self, ids):
        quotient = take_rows(self.quotient_embeddings,
                             ops.floor_divide(ids, self.num_collisions))
        remainder = take_rows(self.remainder_embeddings, ops.mod(ids, self.num_collisions))
        return combine(quotient, remainder, self.operation)

    @property
    def params(self):
        return (self.quotient_shape[0] * self.quotient_shape[1]
                + self.remainder_shape[0] * self.remainder_shape[1])

    @property
    def bytes(self):
        return self.params * FLOAT_BYTES

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_collisions": self.num_collisions,
            "operation": self.operation,
            "embeddings_initializer": None if self.embeddings_initializer is None
            else initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": regularizers.serialize(
                self.embeddings_regularizer),
            "embeddings_constraint": constraints.serialize(
                self.embeddings_constraint),
        })
        return config


def combine(quotient, remainder, operation):
    if operation == "mult":
        return ops.multiply(quotient, remainder)
    if operation == "add":
        return ops.add(quotient, remainder)
    return ops.concatenate([quotient, remainder], axis=-1)
