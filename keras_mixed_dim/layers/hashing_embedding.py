"""`HashingEmbedding`: the hashing trick, the baseline of the compressed
embeddings."""

from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers
from keras import saving

from keras_mixed_dim.backend import take_rows
from keras_mixed_dim.backend.row_gradients import flag_table
from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.layers import hashes
from keras_mixed_dim.layers.lookup import IdLookupLayer

HASHES = ("mod", "universal")


@saving.register_keras_serializable(package="keras_mixed_dim")
class HashingEmbedding(IdLookupLayer):
    """The hashing trick: `num_buckets` full-width rows shared by all ids.

    Id `i` reads row `i mod num_buckets` (`hash="mod"`, the usual baseline)
    or row `h(i) mod num_buckets` for a seeded 32-bit hash
    (`hash="universal"`, see `keras_mixed_dim.layers.hashes`; identical on
    every backend). Ids sharing a row share their vector: the baseline QR
    and the other compressed layers are measured against.

    Ids outside `[0, input_dim)` give all-zero vectors and no gradient;
    string or boolean ids raise a `TypeError`.

    Args:
        input_dim: Integer. Number of ids.
        output_dim: Integer. Width of the vectors.
        num_buckets: Integer. Rows of the table (at most `2**30`).
        hash: `"mod"` (default) or `"universal"`.
        seed: Seed of the universal hash.
        combiner: None, `"sum"`, `"mean"` or `"sqrtn"` (reduce the last id
            axis, weighted as `tf.nn.safe_embedding_lookup_sparse`).
        embeddings_initializer: Initializer of the table.
        embeddings_regularizer: Regularizer of the table.
        embeddings_constraint: Constraint of the table.
        mask_zero: Whether id 0 is padding.
        bag_size: Optional padded width of `tf.RaggedTensor` /
            `tf.SparseTensor` bags (a longer bag keeps its first
            `bag_size` ids).
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: Integer ids of any shape (rank >= 2 with a combiner), or on
            TensorFlow a rank-2 `tf.RaggedTensor` / `tf.SparseTensor` of
            bags (needs a combiner and `bag_size`).
        weights: Optional float per-id weights of the ids' shape (ragged or
            sparse like them); needs a combiner.

    Returns:
        `inputs.shape + (output_dim,)`, or without the last id axis with a
        combiner, in the layer's compute dtype.

    Example:

    >>> layer = HashingEmbedding(1_000_000, 16, num_buckets=10_000)
    >>> layer(np.array([[3], [999_999]])).shape
    (2, 1, 16)
    """

    def __init__(self, input_dim, output_dim, num_buckets, hash="mod", seed=0,
                 combiner=None, embeddings_initializer="uniform",
                 embeddings_regularizer=None, embeddings_constraint=None,
                 mask_zero=False, **kwargs):
        super().__init__(input_dim, output_dim, combiner=combiner,
                         mask_zero=mask_zero, **kwargs)
        if hash not in HASHES:
            raise ValueError(f"`hash` must be one of {HASHES}. Received: {hash!r}")
        self.num_buckets = hashes.check_num_buckets(num_buckets)
        self.hash = hash
        self.seed = int(seed)
        self._params = hashes.HashParams(self.seed) if hash == "universal" else None
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = constraints.get(embeddings_constraint)

    def build(self, input_shape=None):
        if self.built:
            return
        self.embeddings = flag_table(self.add_weight(
            shape=(self.num_buckets, self.output_dim),
            initializer=self.embeddings_initializer,
            regularizer=self.embeddings_regularizer,
            constraint=self.embeddings_constraint, name="embeddings"))
        self.built = True

    def buckets(self, ids):
        """Row of each (valid, int32) id."""
        if self._params is None:
            return ops.mod(ids, self.num_buckets)
        return hashes.buckets([ids], self._params, self.num_buckets)

    def lookup(self, ids):
        return take_rows(self.embeddings, self.buckets(ids))

    @property
    def params(self):
        return self.num_buckets * self.output_dim

    @property
    def bytes(self):
        constants = 0 if self._params is None else self._params.num_constants
        return (self.params + constants) * FLOAT_BYTES

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_buckets": self.num_buckets,
            "hash": self.hash,
            "seed": self.seed,
            "embeddings_initializer": initializers.serialize(
                self.embeddings_initializer),
            "embeddings_regularizer": regularizers.serialize(
                self.embeddings_regularizer),
            "embeddings_constraint": constraints.serialize(
                self.embeddings_constraint),
        })
        return config
