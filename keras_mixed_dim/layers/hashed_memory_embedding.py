"""Hashed shared memory: ROBE and LMA embeddings (`HashedMemoryEmbedding`),
the `SharedMemory` pool several of them can read, and `lsh_signatures`,
which builds LMA's minhash signatures from data in one streaming pass."""

import math

import numpy as np
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers
from keras import saving

from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.checks import check_positive_int
from keras_mixed_dim.layers import hashes
from keras_mixed_dim.layers.lookup import IdLookupLayer
from keras_mixed_dim.layers.lookup import prepare_bag_inputs
from keras_mixed_dim.layers.lookup import TableLayer

INT_BYTES = 4
HASH_KINDS = ("robe", "lsh", "identity")
ROBE_CHUNK = 32
MINHASH_MASK = 0x7FFFFFFF


@saving.register_keras_serializable(package="keras_mixed_dim")
class SharedMemory(TableLayer):
    """One trainable 1-D float32 array that several `HashedMemoryEmbedding`
    layers read (one pool for all features, as ROBE and LMA intend).

    Pass it as `memory=` to each embedding layer. In a functional model each
    embedding call also calls the pool on the same ids (which it ignores),
    so the pool is a node of the graph: `model.save` stores it once and
    `keras.models.load_model` reconnects every embedding to the one loaded
    pool. In a subclassed model, keep the pool as an attribute of the model
    so its variable is tracked (the embeddings do not track it, to avoid
    counting it once per feature).

    Args:
        memory_size: Integer. Number of floats.
        memory_initializer: Initializer (default uniform in [-0.05, 0.05],
            the scale of `keras.layers.Embedding`).
        memory_regularizer: Optional regularizer.
        memory_constraint: Optional constraint.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: Anything (ignored; it ties the pool into the graph).

    Returns:
        The float32 memory, shape `(memory_size,)`.

    Example:

    >>> pool = SharedMemory(1 << 16)
    >>> user_ids = keras.Input((), dtype="int32")
    >>> item_ids = keras.Input((), dtype="int32")
    >>> u = HashedMemoryEmbedding(5000, 16, memory=pool, seed=1)(user_ids)
    >>> v = HashedMemoryEmbedding(9000, 16, memory=pool, seed=2)(item_ids)
    """

    def __init__(self, memory_size, memory_initializer="uniform",
                 memory_regularizer=None, memory_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.memory_size = hashes.check_num_buckets(memory_size, "memory_size")
        self.memory_initializer = initializers.get(memory_initializer)
        self.memory_regularizer = regularizers.get(memory_regularizer)
        self.memory_constraint = constraints.get(memory_constraint)

    def build(self, input_shape=None):
        if self.built:
            return
        self.memory = self.add_weight(
            shape=(self.memory_size,), initializer=self.memory_initializer,
            regularizer=self.memory_regularizer,
            constraint=self.memory_constraint, dtype="float32", name="memory")
        self.built = True

    def call(self, inputs=None):
        return ops.convert_to_tensor(self.memory)

    def compute_output_shape(self, input_shape=None):
        return (self.memory_size,)

    def compute_output_spec(self, inputs=None):
        from keras import KerasTensor

        return KerasTensor((self.memory_size,), dtype="float32")

    @property
    def bytes(self):
        return self.memory_size * FLOAT_BYTES

    def get_config(self):
        config = super().get_config()
        config.update({
            "memory_size": self.memory_size,
            "memory_initializer": initializers.serialize(self.memory_initializer),
            "memory_regularizer": regularizers.serialize(self.memory_regularizer),
            "memory_constraint": constraints.serialize(self.memory_constraint),
        })
        return config


@saving.register_keras_serializable(package="keras_mixed_dim")
class HashedMemoryEmbedding(IdLookupLayer):
    """Embedding whose vectors are read from one hashed array of floats.

    Every element of every vector lives somewhere in a trainable 1-D array
    `M` of exactly `memory_size` floats, so any byte budget is met exactly
    (Desai et al., "Semantically Constrained Memory Allocation (SCMA) for
    Embedding in Efficient Recommendation Systems" / LMA, arXiv:2103.06124;
    Desai, Chou, Shrivastava, "Random Offset Block Embedding (ROBE) for
    compressed embedding tables in deep learning recommendation systems",
    MLSys 2022). Element `j` of id `v` is, with `Z = chunk_size`,

        M[(h(key(v, j // Z)) + j % Z) mod memory_size]

    - `hash="robe"`: `key = (v, j // Z)`: chunks of `Z` consecutive floats
      at a universally hashed offset.
    - `hash="lsh"` (LMA): `key = (a j//Z-dependent subset of k of the id's
      minhash signature values, j // Z)`. Ids whose co-occurrence sets have
      Jaccard similarity `J` share a chunk with probability about `J**k`
      (plus the `1 / memory_size` of any two keys), so similar ids share
      memory and dissimilar ones rarely do. Build the signatures with
      `lsh_signatures`; they are a non-trainable int32 table
      `(signature_rows, signature_size)` counted in `bytes`. With
      `signature_rows < input_dim` only ids below it have signatures
      (with frequency-ranked ids: the frequent ones, where similarity
      matters most) and the others hash by their id, as in ROBE.
    - `hash="identity"`: chunk `c` of id `v` at `v * output_dim + c * Z`,
      so element `j` is at `v * output_dim + j`: the row-major full table
      when `memory_size >= input_dim * output_dim`; a reference layout.

    The hashes are 32-bit, computed in int32 lanes and identical bit for bit
    on TensorFlow, JAX (without x64) and PyTorch
    (`keras_mixed_dim.layers.hashes`).

    Sharing one memory among features: create a `SharedMemory(memory_size)`
    and pass it as `memory=` to each layer (give each a different `seed`).

    Ids outside `[0, input_dim)` give all-zero vectors and no gradient;
    string or boolean ids raise a `TypeError`.

    Args:
        input_dim: Integer. Number of ids.
        output_dim: Integer. Width of the vectors.
        memory_size: Integer. Floats in the memory (at most `2**30`);
            optional when `memory` is given.
        hash: `"robe"` (default), `"lsh"` or `"identity"`.
        chunk_size: `Z`, floats read contiguously per hash. Default
            `min(output_dim, 32)` for ROBE (the ROBE paper's Z up to 32
            keeps quality and reads one block per vector), 1 for LSH (every
            element its own key, as in LMA), `output_dim` for identity.
        signatures: For `"lsh"`: int array `(signature_rows,
            signature_size)` of non-negative minhashes (from
            `lsh_signatures`) for ids `[0, signature_rows)`,
            `signature_rows <= input_dim`. Without it, each id's signature
            is its own id (the layer then hashes like ROBE until signatures
            are assigned to `layer.signatures`).
        signature_rows: Rows of the signature table when `signatures` is
            not given (default `input_dim`).
        signature_size: Columns of the signature table when `signatures` is
            not given (default 4).
        hashes_per_element: `k`, signature values per key (default 2, at
            most `signature_size`).
        signed: Multiply each chunk by a hashed sign (+1/-1), so the values
            colliding ids add to each other's vectors cancel on average.
        seed: Hash seed; use a different one for each layer sharing a memory.
        memory: Optional `SharedMemory` to read instead of an own memory.
        memory_initializer: Initializer of an own memory (default uniform
            in [-0.05, 0.05]).
        memory_regularizer: Regularizer of an own memory.
        memory_constraint: Constraint of an own memory.
        combiner: None, `"sum"`, `"mean"` or `"sqrtn"` (reduce the last id
            axis, weighted as `tf.nn.safe_embedding_lookup_sparse`).
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
        memory: The shared memory tensor; passed automatically when the
            layer was given a `SharedMemory` (and by a loaded model).

    Returns:
        `inputs.shape + (output_dim,)`, or without the last id axis with a
        combiner, in the layer's compute dtype.

    Example:

    >>> layer = HashedMemoryEmbedding(100_000, 16, memory_size=50_000)
    >>> layer(np.array([3, 99_999])).shape
    (2, 16)
    >>> pool = SharedMemory(100_000)
    >>> users = HashedMemoryEmbedding(5000, 16, memory=pool, seed=1)
    >>> items = HashedMemoryEmbedding(9000, 16, memory=pool, seed=2)
    """

    def __init__(self, input_dim, output_dim, memory_size=None, hash="robe",
                 chunk_size=None, signatures=None, signature_size=None,
                 signature_rows=None,
                 hashes_per_element=None, signed=False, seed=0, memory=None,
                 memory_initializer="uniform", memory_regularizer=None,
                 memory_constraint=None, combiner=None, mask_zero=False,
                 shared_memory=False, **kwargs):
        super().__init__(input_dim, output_dim, combiner=combiner,
                         mask_zero=mask_zero, **kwargs)
        if hash not in HASH_KINDS:
            raise ValueError(f"`hash` must be one of {HASH_KINDS}. Received: {hash!r}")
        if memory is not None:
            if not isinstance(memory, SharedMemory):
                raise ValueError(
                    f"`memory` must be a SharedMemory layer. Received: {memory!r}")
            if memory_size is not None and int(memory_size) != memory.memory_size:
                raise ValueError(
                    f"memory_size={memory_size} differs from the shared memory's "
                    f"{memory.memory_size}.")
            memory_size = memory.memory_size
            shared_memory = True
        if memory_size is None:
            raise ValueError("Give `memory_size` or a SharedMemory as `memory`.")
        self.memory_size = hashes.check_num_buckets(memory_size, "memory_size")
        self.hash = hash
        if chunk_size is None:
            chunk_size = {"robe": min(self.output_dim, ROBE_CHUNK), "lsh": 1,
                          "identity": self.output_dim}[hash]
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        if self.chunk_size > self.output_dim:
            raise ValueError(
                f"`chunk_size` ({chunk_size}) must be at most output_dim "
                f"({self.output_dim}).")
        self.num_chunks = -(-self.output_dim // self.chunk_size)
        if hash == "identity" and (
                self.input_dim * self.output_dim > hashes.MASK32 >> 1):
            raise ValueError(
                "hash='identity' needs input_dim * output_dim < 2**31 (its offsets "
                "are int32).")
        self.seed = int(seed)
        self.signed = bool(signed)
        self.shared_memory = bool(shared_memory)
        # Not tracked as a sublayer: the pool is a graph node of its own, so
        # it is saved once however many layers read it.
        object.__setattr__(self, "_memory_layer", memory)
        self.memory_initializer = initializers.get(memory_initializer)
        self.memory_regularizer = regularizers.get(memory_regularizer)
        self.memory_constraint = constraints.get(memory_constraint)
        self._initial_signatures = None
        if hash == "lsh":
            if signatures is not None:
                signatures = np.asarray(signatures)
                if signatures.ndim != 2 or not (
                        1 <= signatures.shape[0] <= self.input_dim):
                    raise ValueError(
                        f"`signatures` must have shape (signature_rows <= input_dim="
                        f"{self.input_dim}, signature_size); received "
                        f"{signatures.shape}.")
                if signature_rows is not None and signature_rows != signatures.shape[0]:
                    raise ValueError(
                        f"signature_rows={signature_rows} differs from the "
                        f"signatures' {signatures.shape[0]} rows.")
                signature_rows = signatures.shape[0]
                if signatures.min(initial=0) < 0 or signatures.max(
                        initial=0) > MINHASH_MASK:
                    raise ValueError("`signatures` must be in [0, 2**31).")
                if signature_size is not None and signature_size != signatures.shape[1]:
                    raise ValueError(
                        f"signature_size={signature_size} differs from the "
                        f"signatures' {signatures.shape[1]} columns.")
                signature_size = signatures.shape[1]
                self._initial_signatures = signatures.astype("int32")
            self.signature_size = check_positive_int(
                "signature_size", 4 if signature_size is None else signature_size)
            self.signature_rows = check_positive_int(
                "signature_rows",
                self.input_dim if signature_rows is None else signature_rows)
            if self.signature_rows > self.input_dim:
                raise ValueError(
                    f"signature_rows={signature_rows} exceeds input_dim={self.input_dim}.")
            k = 2 if hashes_per_element is None else hashes_per_element
            self.hashes_per_element = check_positive_int("hashes_per_element", k)
            if self.hashes_per_element > self.signature_size:
                raise ValueError(
                    f"hashes_per_element={k} exceeds signature_size="
                    f"{self.signature_size}.")
            rng = np.random.default_rng([self.seed & hashes.MASK32, 0x15B])
            self._subsets = np.stack([
                rng.choice(self.signature_size, self.hashes_per_element,
                           replace=False) for _ in range(self.num_chunks)])
            self._params = hashes.HashParams(self.seed, self.hashes_per_element)
        else:
            if signatures is not None:
                raise ValueError("`signatures` are only used with hash='lsh'.")
            self.signature_size = None
            self.signature_rows = None
            self.hashes_per_element = None
            self._subsets = None
            self._params = hashes.HashParams(self.seed, 1)
        self._salts = hashes.random_salts(self.seed, self.num_chunks)
        self._salt_lanes = hashes.lane_constant(self._salts)
        # Python ints, so compiled graphs hold no numpy constants
        self._subset_lists = (None if self._subsets is None else
                              [self._subsets[:, t].tolist()
                               for t in range(self.hashes_per_element)])
        element = np.arange(self.output_dim)
        self._chunk_of = (element // self.chunk_size).tolist()
        self._within = (element % self.chunk_size).tolist()

    def build(self, input_shape=None):
        if self.built:
            return
        self.memory = None
        if not self.shared_memory:
            self.memory = self.add_weight(
                shape=(self.memory_size,), initializer=self.memory_initializer,
                regularizer=self.memory_regularizer,
                constraint=self.memory_constraint, dtype="float32", name="memory")
        self.signatures = None
        if self.hash == "lsh":
            self.signatures = self.add_weight(
                shape=(self.signature_rows, self.signature_size),
                initializer=_IdSignatures(), dtype="int32", trainable=False,
                name="signatures")
            if self._initial_signatures is not None:
                self.signatures.assign(self._initial_signatures)
                self._initial_signatures = None
        self.built = True

    def __call__(self, inputs, memory=None, **kwargs):
        inputs, kwargs = prepare_bag_inputs(self, inputs, kwargs)
        if memory is None and self._memory_layer is not None:
            memory = self._memory_layer(inputs)
        if memory is None:
            return super().__call__(inputs, **kwargs)
        return super().__call__(inputs, memory=memory, **kwargs)

    def call(self, inputs, memory=None, weights=None):
        if memory is None:
            if self.memory is None:
                raise ValueError(
                    f"Layer {self.name!r} reads a shared memory: call it with "
                    "`memory=` (a SharedMemory output), or build it with "
                    "`memory=SharedMemory(...)`.")
            memory = self.memory
        return self.lookup_and_combine(inputs, lambda ids: self.lookup(ids, memory),
                                       weights)

    def lookup(self, ids, memory=None):
        """Vectors of valid int32 ids read from `memory` (default: own)."""
        memory = self.memory if memory is None else memory
        values = ops.take(memory, self.locations(ids), axis=0)
        if self.signed:
            values = values * ops.cast(self._signs(ids), values.dtype)
        return values

    def _chunk_lanes(self, ids):
        """The 32-bit hash (lanes) of each chunk key: `ids.shape + (chunks,)`."""
        if self.hash == "lsh":
            rows = ops.take(self.signatures,
                            ops.minimum(ids, self.signature_rows - 1), axis=0)
            if self.signature_rows < self.input_dim:
                own = ops.expand_dims(ids, -1)
                rows = ops.where(ops.expand_dims(ids < self.signature_rows, -1),
                                 rows, own + ops.zeros_like(rows))
            keys = [ops.take(rows, ops.convert_to_tensor(subset, dtype="int32"),
                             axis=-1)
                    for subset in self._subset_lists]
            return hashes.hash_tuple(keys, self._params, self._salt_lanes)
        return hashes.hash_tuple([ops.expand_dims(ids, -1)], self._params,
                                 self._salt_lanes)

    def chunk_offsets(self, ids):
        """Memory offset of each chunk of each (valid, int32) id."""
        if self.hash == "identity":
            chunks = ops.arange(self.num_chunks, dtype="int32")
            offsets = (ops.expand_dims(ids, -1) * self.output_dim
                       + chunks * self.chunk_size)
            return ops.mod(offsets, self.memory_size)
        return hashes.lanes_mod(self._chunk_lanes(ids), self.memory_size)

    def locations(self, ids):
        """Memory index of every element: int32 `ids.shape + (output_dim,)`."""
        offsets = self.chunk_offsets(ids)
        chunk_of = ops.convert_to_tensor(self._chunk_of, dtype="int32")
        within = ops.convert_to_tensor(self._within, dtype="int32")
        starts = ops.take(offsets, chunk_of, axis=-1)
        return ops.mod(starts + within, self.memory_size)

    def _signs(self, ids):
        if self.hash == "identity":
            return 1.0
        signs = hashes.lanes_sign(self._chunk_lanes(ids))
        return ops.take(signs, ops.convert_to_tensor(self._chunk_of, dtype="int32"),
                        axis=-1)

    def compute_output_spec(self, inputs, memory=None, weights=None):
        from keras import KerasTensor

        return KerasTensor(self.compute_output_shape(inputs.shape),
                           dtype=self.compute_dtype)

    @property
    def params(self):
        """Floats of the memory this layer reads (shared or own)."""
        return self.memory_size

    @property
    def auxiliary_bytes(self):
        """Bytes besides the memory: signatures and hash constants."""
        constants = self._params.num_constants + self.num_chunks
        if self.hash == "lsh":
            constants += self._subsets.size
            constants += self.signature_rows * self.signature_size
        return constants * INT_BYTES

    @property
    def bytes(self):
        """Everything the layer needs, its memory included (shared or not).

        To total several layers sharing one memory, use
        `keras_mixed_dim.embedding_bytes`, which counts each memory once.
        """
        return self.memory_size * FLOAT_BYTES + self.auxiliary_bytes

    def get_config(self):
        config = super().get_config()
        config.update({
            "memory_size": self.memory_size,
            "hash": self.hash,
            "chunk_size": self.chunk_size,
            "signature_size": self.signature_size,
            "signature_rows": self.signature_rows,
            "hashes_per_element": self.hashes_per_element,
            "signed": self.signed,
            "seed": self.seed,
            "shared_memory": self.shared_memory,
            "memory_initializer": initializers.serialize(self.memory_initializer),
            "memory_regularizer": regularizers.serialize(self.memory_regularizer),
            "memory_constraint": constraints.serialize(self.memory_constraint),
        })
        return config


def embedding_bytes(embedding_layers):
    """Deprecated (removed in 0.4.0): `keras_mixed_dim.embedding_bytes`."""
    import warnings

    from keras_mixed_dim.budgets import embedding_bytes as count

    warnings.warn("`keras_mixed_dim.layers.hashed_memory_embedding.embedding_bytes` is "
                  "deprecated and will be removed in 0.4.0; use "
                  "`keras_mixed_dim.embedding_bytes` (the same count).",
                  DeprecationWarning, stacklevel=2)
    return count(list(embedding_layers))


class _IdSignatures(initializers.Initializer):
    """Each id's signature is its own id: no similarity information, so the
    layer hashes like ROBE until real signatures are assigned."""

    def __call__(self, shape, dtype=None):
        ids = ops.arange(shape[0], dtype="int32")
        return ops.cast(ops.tile(ops.expand_dims(ids, -1), (1, shape[1])),
                        dtype or "int32")


def lsh_signatures(pairs, input_dim, signature_size=4, seed=0):
    """Minhash signatures of each id's co-occurrence set, in one pass.

    The co-occurrence set of an id is the set of contexts it appears with:
    for a MovieLens item, the users who rated it; for a Criteo value, the
    rows (or a sample of rows) it appears in. Column `l` of an id's
    signature is `min(h_l(c))` over its contexts `c`, so two ids agree in a
    column with probability equal to the Jaccard similarity of their sets.

    Args:
        pairs: One `(ids, contexts)` tuple of two equal-length numpy
            integer arrays, or an iterable of such pairs (streamed: memory stays
            `input_dim x signature_size`). Contexts must be in `[0, 2**31)`;
            ids outside `[0, input_dim)` are ignored.
        input_dim: Number of ids.
        signature_size: Minhashes per id.
        seed: Seed of the minhash functions.

    Returns:
        int32 array `(input_dim, signature_size)` in `[0, 2**31)`. An id
        that never appears gets its own id in every column (no similarity
        to anything, so it is placed like a ROBE id).

    Example:

    >>> items = np.array([0, 0, 1, 1, 2])
    >>> users = np.array([7, 8, 7, 8, 9])
    >>> sig = lsh_signatures((items, users), input_dim=3, signature_size=4)
    >>> bool((sig[0] == sig[1]).all())      # items 0 and 1 share their users
    True
    >>> layer = HashedMemoryEmbedding(3, 8, memory_size=64, hash="lsh", signatures=sig)
    """
    input_dim = check_positive_int("input_dim", input_dim)
    signature_size = check_positive_int("signature_size", signature_size)
    params = hashes.HashParams(seed, 1)
    salts = hashes.random_salts(seed ^ 0x3141, signature_size).astype(np.uint64)
    signatures = np.full((input_dim, signature_size), MINHASH_MASK, dtype=np.int64)
    seen = np.zeros(input_dim, dtype=bool)
    if isinstance(pairs, tuple) and len(pairs) == 2 and all(
            isinstance(p, np.ndarray) for p in pairs):
        pairs = [pairs]
    for ids, contexts in pairs:
        ids = np.asarray(ids).ravel()
        contexts = np.asarray(contexts).ravel()
        if ids.shape != contexts.shape:
            raise ValueError(
                f"ids and contexts differ in length: {ids.shape} vs {contexts.shape}.")
        if contexts.size and (contexts.min() < 0 or contexts.max() > MINHASH_MASK):
            raise ValueError("contexts must be in [0, 2**31).")
        keep = (ids >= 0) & (ids < input_dim)
        ids, contexts = ids[keep].astype(np.int64), contexts[keep]
        if not ids.size:
            continue
        values = hashes.hash_tuple_numpy(contexts[:, None, None], params, salts)
        values = (values & np.uint64(MINHASH_MASK)).astype(np.int64)
        order = np.argsort(ids, kind="stable")
        ids, values = ids[order], values[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        unique = ids[starts]
        mins = np.minimum.reduceat(values, starts, axis=0)
        signatures[unique] = np.minimum(signatures[unique], mins)
        seen[unique] = True
    unseen = np.flatnonzero(~seen)
    signatures[unseen] = unseen[:, None]
    return signatures.astype(np.int32)


def lsh_collision_probability(jaccard, hashes_per_element, memory_size):
    """Chance two ids share a chunk: `J**k + (1 - J**k) / memory_size`."""
    agree = float(jaccard) ** int(hashes_per_element)
    return agree + (1.0 - agree) / memory_size


def memory_for_bytes(budget_bytes, auxiliary_bytes=0):
    """Floats of memory that fit `budget_bytes` after `auxiliary_bytes`."""
    return max(1, int(math.floor((budget_bytes - auxiliary_bytes) / FLOAT_BYTES)))
