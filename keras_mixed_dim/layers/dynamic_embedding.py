"""`DynamicEmbedding`: a vocabulary that grows while training, within a
fixed number of bytes, with mixed-dimension tiers that follow popularity."""

import functools
import math

import keras
import numpy as np
from keras import initializers
from keras import ops
from keras import saving

from keras_mixed_dim.backend import count_bounds_reached
from keras_mixed_dim.backend import dynamic_lookup
from keras_mixed_dim.backend import equals_columns
from keras_mixed_dim.backend import nonnegative_divmod
from keras_mixed_dim.backend import row_writes
from keras_mixed_dim.backend import take_rows
from keras_mixed_dim.backend import take_rows_in_range
from keras_mixed_dim.backend.row_gradients import flag_table
from keras_mixed_dim.dynamic.id_map import PACKED
from keras_mixed_dim.dynamic.id_map import DynamicIdMap
from keras_mixed_dim.dynamic.id_map import key_columns
from keras_mixed_dim.dynamic.id_map import raw_keys
from keras_mixed_dim.dynamic.plan import plan_capacity
from keras_mixed_dim.layers.slots import slot_initial_value
from keras_mixed_dim.layers.slots import slot_variables
from keras_mixed_dim.layers import hashes
from keras_mixed_dim.layers.ids import check_bag_rank
from keras_mixed_dim.layers.lookup import bag_coefficients
from keras_mixed_dim.layers.lookup import check_bag_size
from keras_mixed_dim.layers.lookup import check_combiner
from keras_mixed_dim.layers.lookup import check_weights
from keras_mixed_dim.layers.lookup import reduce_bag
from keras_mixed_dim.layers.lookup import TableLayer
from keras_mixed_dim.layers.qr_embedding import EMBEDDING_STD

# The fallback hashes a key's three pieces; one seed shared by graph and host.
_FALLBACK_SEED_SALT = 0xD1A


@saving.register_keras_serializable(package="keras_mixed_dim")
class DynamicEmbedding(TableLayer):
    """Embeddings of raw ids that arrive while training, in fixed bytes.

    Raw ids (int64 of any value, or strings) are mapped to rows on the host
    by `update` (counting, admission, eviction, tier moves) or `lookup_ids`
    (no counting), a step of the input pipeline; the model takes the int32
    array they return (`ids.shape + (3,)`: slot, tag and the id's fallback
    bucket, a seeded hash of its 64 bits computed on the host here and with
    stock ops in the serving graph). An id reads its own row once admitted (its sketch count
    reached `min_count`); before that, and after it is evicted, it reads a
    shared hashed fallback table, never another id's row.

    Rows live in tiers of decreasing width (`tier_dims`, each projected to
    `output_dim` as in `MixedDimEmbedding`); every `rebalance_every` steps the
    most counted ids (decayed counts) move to the widest tier and the least
    to the narrowest, warm-started by least squares through the new tier's
    projection. A row given to a new id starts from that id's fallback
    vector (mapped into the tier the same way) with fresh optimizer slots
    (the values a new slot starts from: zeros for Adam's moments).
    Tables and projections are parts of one float32 variable per row width
    (`width_tables`; `part(name)` reads one), so that the optimizer updates a few
    variables per layer, not one per table; they are flagged as tables, so
    that `SparseRowOptimizer` updates only the rows a batch read.

    `capacity_bytes` bounds everything the layer holds: tables, projections,
    fallback, optimizer slots (`optimizer_slots` copies of each weight: 2
    for Adam), the per-slot tags, the host id map, counts and sketch. Pass
    the model's optimizer to `update` so that it can check the real slots.

    Args:
        output_dim: Integer. Width of the output vectors.
        capacity_bytes: Integer. The budget of everything above.
        min_count: Sketch count at which an id is admitted (>= 1).
        eviction: `"lfu"` (least decayed count, only for a candidate counted
            more), `"lru"` (least recently seen) or `"ttl"` (slots unseen
            for `ttl` steps or timestamp units are freed; nothing else is
            evicted).
        ttl: Time to live with `eviction="ttl"` (refused with another
            eviction).
        num_tiers: Number of tiers when `tier_dims` is not given (widths
            `output_dim / 4**t`; default 3). With `tier_dims` it may only
            repeat their number.
        tier_dims: Explicit tier widths, widest first (`(output_dim,)` is
            one uniform tier, a TFRA-like dynamic table).
        decay: Factor applied to all counts each step (each batch mapped):
            a half-life of `log(0.5) / log(decay)` batches, so a larger
            batch wants `decay ** (new_batch / old_batch)` to keep it in
            examples.
        rebalance_every: Steps between tier rebalances (0: never).
        fallback_buckets: Rows of the fallback (default: `fallback_share`
            of the budget).
        fallback_dim: Their width (default: `output_dim // 4`, at least the
            narrowest tier's, with `"qr"`; the narrowest tier's with
            `"hashing"`).
        fallback: `"qr"` (default): a quotient and a remainder table (half
            the rows each); a key's bucket `b` reads the product of
            quotient row `b // r` and remainder row `b % r` (as
            `QREmbedding`), so the fallback tells far more keys apart than
            it has rows. `"hashing"`: one table, a key reads the row of its
            hashed bucket.
        fallback_share: Share of `capacity_bytes` the fallback takes when
            `fallback_buckets` is not given (default with `"qr"`: 0.5 from
            64 KiB up, rising to 0.6 at 16 KiB and below; 0.1 with
            `"hashing"`).
        live_ids: Distinct ids expected live at once (e.g. a day's), with
            `"qr"`: sizes the fallback instead of `fallback_share`, so that
            the live ids beyond the tiers' rows get about 32 fallback
            buckets each (from the default share up to 80% of the budget;
            `keras_mixed_dim.dynamic.plan.live_ids_share`); where even that
            leaves them under 1.5 buckets each, the fallback is as wide as
            the widest tier instead (`fallback_dim` not given). Its effect
            is saved in the config as `fallback_buckets` and `fallback_dim`.
        sketch_width: Counters per sketch row (default: 5% of the budget).
        sketch_depth: Sketch rows.
        optimizer_slots: Optimizer copies of each weight counted in the
            budget (2 for Adam, 1 for Adagrad or momentum SGD, 0 for SGD).
        combiner: None, `"sum"`, `"mean"` or `"sqrtn"`: reduce the last id
            axis (a bag), weighted by `weights=` exactly as
            `tf.nn.safe_embedding_lookup_sparse` (the package's shared bag
            rule, `keras_mixed_dim.layers.lookup.bag_coefficients`).
        bag_size: Width ragged bags (lists of lists of different lengths)
            are padded to on the host; longer bags keep their first
            `bag_size` ids. Required for ragged bags: padding each batch to
            its own longest bag would give every batch a new shape, and the
            compiled step a retrace.
        embeddings_initializer: Initializer of the tables before use.
        seed: Seed of the sketch, the fallback hash and the initializers.
        max_writes: Row writes per tier that one batch from `prepare`
            carries into the train step; more are deferred to later
            batches (the ids concerned read the fallback meanwhile).
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: int32 `(..., 3)` from `update`, `lookup_ids` or `prepare`.
        weights: Optional float weights of the ids (`inputs.shape[:-1]`),
            with a combiner.
        writes: Optional int32 `(1, num_tiers, max_writes, 4)` from
            `prepare` (or `no_writes()`): row writes applied before the
            lookup, in place on TensorFlow and PyTorch, and on JAX by the
            train step that `keras_mixed_dim.dynamic.dynamic_batches`
            installs, so that `model.fit` can train over a whole stream.

    Returns:
        `inputs.shape[:-1] + (output_dim,)` (without the bag axis with a
        combiner), in the compute dtype. Padding reads zeros and is left
        out of a bag.

    Example:

    >>> layer = DynamicEmbedding(16, capacity_bytes=200_000, min_count=1)
    >>> packed = layer.update(np.array([2**40 + 3, -7]))   # counts and admits
    >>> layer(packed).shape
    (2, 16)
    """

    def __init__(self, output_dim, capacity_bytes, min_count=2, eviction="lfu",
                 ttl=None, num_tiers=None, tier_dims=None, decay=0.999,
                 rebalance_every=100, fallback_buckets=None, fallback_dim=None,
                 sketch_width=None, sketch_depth=2, optimizer_slots=2,
                 combiner=None, bag_size=None, embeddings_initializer="uniform",
                 seed=0, max_writes=64, fallback="qr", fallback_share=None,
                 live_ids=None, **kwargs):
        super().__init__(**kwargs)
        self.combiner = check_combiner(combiner)
        self.bag_size = check_bag_size(bag_size)
        self.plan = plan_capacity(output_dim, capacity_bytes, num_tiers, tier_dims,
                                  fallback_buckets, fallback_dim, sketch_width,
                                  sketch_depth, optimizer_slots, fallback,
                                  fallback_share, live_ids)
        self.id_map = DynamicIdMap(self.plan.tier_rows, min_count, eviction, ttl, decay,
                                   rebalance_every, self.plan.sketch_width,
                                   self.plan.sketch_depth, seed)
        self.output_dim = self.plan.output_dim
        self.capacity_bytes = int(capacity_bytes)
        self.min_count = int(min_count)
        self.eviction = eviction
        self.ttl = ttl
        self.num_tiers = len(self.plan.tier_dims)
        self.decay = float(decay)
        self.rebalance_every = int(rebalance_every)
        self.optimizer_slots = int(optimizer_slots)
        self.seed = int(seed)
        if isinstance(max_writes, bool) or not isinstance(max_writes, (int, np.integer)) \
                or max_writes < 1:
            raise ValueError(f"`max_writes` must be an integer >= 1. "
                             f"Received: max_writes={max_writes!r}")
        self.max_writes = int(max_writes)
        # a plain holder, so that Keras does not track the optimizer's
        # variables as the layer's
        self._write_optimizer_ref = _Holder(None)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self._hash = hashes.HashParams(self.seed ^ _FALLBACK_SEED_SALT, arity=3)
        # `call` converts its arguments itself (`_converted`): Keras's
        # `__call__` walks them with its tree utilities first, which costs
        # PyTorch's eager step some 0.06 ms per call (a tenth of the lookup)
        self._convert_input_args = False
        # (arrays too: `_converted` makes tensors of them)
        self._allow_non_tensor_positional_args = True

    # ------------------------------------------------------------ weights

    def build(self, input_shape=None):
        if self.built:
            return
        if input_shape is not None and input_shape[-1] not in (None, PACKED):
            raise ValueError(
                f"Layer {self.name!r} takes the int32 ids that `update` or "
                f"`lookup_ids` return (last axis {PACKED}); received shape "
                f"{tuple(input_shape)}.")
        plan, d = self.plan, self.plan.output_dim
        fallback_dim = plan.fallback_dim
        # Tables and projections are parts of one float32 variable per row
        # width (a projection's rows are `output_dim` wide): the optimizer
        # updates three variables per layer instead of eight (Adam is
        # elementwise, and its cost per variable, some 25 small ops, was
        # what the extra variables cost) while lookups still gather whole
        # rows. The parts keep the order of the separate variables of
        # earlier versions, which `load_own_variables` maps old files by.
        parts = []
        for t, (rows, width) in enumerate(zip(plan.tier_rows, plan.tier_dims)):
            parts.append((f"tier_{t}_embeddings", (rows, width), self.embeddings_initializer))
            if width != d:
                parts.append((f"tier_{t}_projection", (width, d),
                              initializers.get("glorot_uniform")))
        if plan.fallback == "qr":
            # each factor at QREmbedding's scale, so that their product
            # starts at the scale of an embedding
            limit = math.sqrt(EMBEDDING_STD) * math.sqrt(3.0)
            quotient, remainder = plan.fallback_tables
            parts.append(("fallback_quotient", (quotient, fallback_dim),
                          initializers.RandomUniform(-limit, limit)))
            parts.append(("fallback_remainder", (remainder, fallback_dim),
                          initializers.RandomUniform(-limit, limit)))
        else:
            parts.append(("fallback_embeddings", (plan.fallback_buckets, fallback_dim),
                          self.embeddings_initializer))
        if fallback_dim != d:
            parts.append(("fallback_projection", (fallback_dim, d),
                          initializers.get("glorot_uniform")))
        self.layout = _Layout([(name, shape) for name, shape, _ in parts])
        # each part drawn by its own initializer, in the order of the
        # separate variables of earlier versions (the same draws)
        initial = [ops.convert_to_numpy(initializer(shape, dtype="float32"))
                   for _, shape, initializer in parts]
        self.width_tables = []
        for b, width in enumerate(self.layout.widths):
            value = np.concatenate([v for (name, _, _), v in zip(parts, initial)
                                    if self.layout.buffer[name] == b])
            # flagged: a SparseRowOptimizer updates only the rows a batch
            # read (the projections' rows are read by every batch)
            self.width_tables.append(flag_table(self.add_weight(
                shape=value.shape, initializer=_Constant(value),
                name=f"embeddings_{width}")))
        self.slot_tags = self.add_weight(
            shape=(self.id_map.num_slots,), initializer="zeros", dtype="int32",
            trainable=False, name="slot_tags")
        self._projection_constants()
        self.built = True

    def _projection_constants(self):
        """Constants of `_vectors`: the pieces an id can read (tier `t`,
        then the fallback) that have a projection (`_projected_pieces`), the
        rows of their projections in the `output_dim`-wide variable, in
        order, and the piece of each of their stacked columns (an id keeps
        the columns of its piece only)."""
        layout, plan = self.layout, self.plan
        names = [f"tier_{t}_projection" for t in range(self.num_tiers)] + ["fallback_projection"]
        projected = [g for g, name in enumerate(names) if name in layout.start]
        self._projected_pieces = projected
        self._projection_rows = np.concatenate(
            [layout.rows(names[g]) for g in projected] or [np.zeros(0, np.int32)])
        widths = [*plan.tier_dims, plan.fallback_dim]
        self._piece_columns = np.repeat(
            np.asarray(projected, np.int32), [widths[g] for g in projected])

    # ------------------------------------------------------------ views

    def part(self, name):
        """One part of the layer's variables as a tensor of its shape (a
        tier's table `"tier_{t}_embeddings"`, its projection
        `"tier_{t}_projection"`, `"fallback_quotient"`, `"fallback_remainder"`,
        `"fallback_embeddings"`, `"fallback_projection"`), or None for a
        part the layer does not have (a tier of full width has no
        projection). Any other name (a tier past the last, a misspelt one)
        raises a ValueError naming it."""
        if name not in self.layout.start:
            tiers = [f"tier_{t}_{kind}" for t in range(self.num_tiers)
                     for kind in ("embeddings", "projection")]
            if name not in (*tiers, "fallback_quotient", "fallback_remainder",
                            "fallback_embeddings", "fallback_projection"):
                # a misspelt name or a tier past the last would otherwise
                # read as a part the layer does not have
                raise ValueError(
                    f"Layer {self.name!r} has no part {name!r}; its parts are "
                    f"{list(self.layout.names)}.")
            return None
        return take_rows(self.width_tables[self.layout.buffer[name]], self.layout.rows(name))

    def part_views(self, arrays):
        """`{name: numpy array}` of every part, as views of `arrays`: one
        array per variable of `width_tables` (their values, or an optimizer
        slot of each)."""
        return self.layout.views([np.asarray(a) for a in arrays])

    @property
    def tables(self):
        """Each tier's table (read-only tensors, widest tier first)."""
        return [self.part(f"tier_{t}_embeddings") for t in range(self.num_tiers)]

    @property
    def projections(self):
        """Each tier's projection to `output_dim` (None for a full-width tier)."""
        return [self.part(f"tier_{t}_projection") for t in range(self.num_tiers)]

    @property
    def fallback(self):
        """The fallback's table (the quotient table with `"qr"`)."""
        return self.part("fallback_quotient" if self.plan.fallback == "qr"
                         else "fallback_embeddings")

    @property
    def fallback_remainder(self):
        """The QR fallback's remainder table (None with `"hashing"`)."""
        return self.part("fallback_remainder")

    @property
    def fallback_projection(self):
        """The fallback's projection (None when `fallback_dim == output_dim`)."""
        return self.part("fallback_projection")

    # ------------------------------------------------------------ graph

    def __call__(self, *args, **kwargs):
        # PyTorch's eager step: the layer's call without Keras's per-call
        # machinery, where it would add nothing (`direct_call` there)
        fused = dynamic_lookup()
        direct = getattr(fused, "direct_call", None)
        if direct is not None:
            outputs = direct(self, args, kwargs)
            if outputs is not None:
                return outputs
        return super().__call__(*args, **kwargs)

    def call(self, inputs, weights=None, writes=None):
        inputs, weights = self._converted(inputs), self._converted(weights)
        if writes is not None:
            if row_writes().WRITES_IN_LAYER:
                self._apply_writes(writes)
            elif not self._write_optimizer_ref.jax_step:
                raise NotImplementedError(
                    f"Layer {self.name!r}: on JAX the row writes of `prepare` are "
                    f"applied by the train step that `dynamic_batches(..., model)` "
                    f"installs (the JAX trainer keeps its own copy of the tables "
                    f"during `fit`); feed the model through it, or call `update` "
                    f"between `train_on_batch` calls.")
            # else: the installed JAX train step applied them before the
            # forward pass (`keras_mixed_dim.dynamic.stream`)
        inputs = ops.convert_to_tensor(inputs)
        if inputs.shape[-1] != PACKED:
            raise ValueError(f"Layer {self.name!r} takes ids packed by `update` or "
                             f"`lookup_ids` (last axis {PACKED}); received shape "
                             f"{tuple(inputs.shape)}.")
        fused = dynamic_lookup()
        if fused is not None and hasattr(fused, "unpack"):
            # the same reading in the backend's own ops (PyTorch's eager step)
            safe, admitted, buckets = fused.unpack(self, inputs)
        else:
            inputs = ops.cast(inputs, "int32")
            slot, tag, buckets = ops.unstack(inputs, PACKED, axis=-1)
            # a slot out of range is not its clipped self and reads no row
            safe = ops.clip(slot, 0, self.id_map.num_slots - 1)
            stored = take_rows_in_range(self.slot_tags, safe)
            admitted = ops.logical_and(
                ops.equal(safe, slot),
                ops.logical_and(ops.equal(stored, tag), ops.greater(tag, 0)))
        outputs, valid = self._vectors(safe, admitted, buckets)
        if self.combiner is not None:
            ids_shape = tuple(inputs.shape[:-1])
            check_bag_rank(ids_shape, self.combiner, self.name)
            weights = check_weights(weights, ids_shape, self.combiner, self.name)
            valid = ops.logical_or(valid, admitted)
            outputs = reduce_bag(outputs, bag_coefficients(valid, weights, self.combiner))
        elif weights is not None:
            check_weights(weights, tuple(inputs.shape[:-1]), None, self.name)
        return ops.cast(outputs, self.compute_dtype)

    def _converted(self, x):
        """`x` as Keras's `__call__` converts a layer's arguments (off for
        this layer: `_convert_input_args`): an array as a tensor, nothing
        cast (`autocast` is off for table layers, so bag weights keep their
        dtype there too); the writes are read as they come
        (`_apply_writes`)."""
        if x is None:
            return None
        return self.dtype_policy.convert_input(x, self.autocast, self.input_dtype)

    def _vectors(self, safe, admitted, buckets):
        """Output vectors: slot `safe`'s row (`safe` in range) through its
        tier's projection where `admitted`, else the fallback's vector of
        `buckets` (zeros for a bucket out of range); and where the bucket
        was valid.

        An id reads one piece: its tier's row or the fallback's. The rows of
        every piece are gathered for every id (static shapes), but pieces in
        one variable that no id reads together share a lane (a tier's row or
        the QR quotient's), and each variable's lanes are one gather: what a
        step costs on every backend grows with the rows gathered (their
        gradients' scatter or segment sum), little with the ops. A full-width
        piece is selected as it is; the other pieces, masked (each column
        kept where its piece is the id's), go through one product with
        their stacked projections. Every row gathered is in range
        (`take_rows_in_range`: JAX skips the bounds checks)."""
        fused = dynamic_lookup()
        found = None if fused is None else fused.vectors(self, safe, admitted, buckets)
        if found is not None:   # None: the backend's lookup leaves this call to this one
            return found
        layout, plan, num_tiers = self.layout, self.plan, self.num_tiers
        # a bucket out of range (padding: -1) is not its clipped self
        bucket = ops.clip(buckets, 0, plan.fallback_range - 1)
        valid = ops.equal(bucket, buckets)
        # the piece each id reads: its tier's, the fallback's (`num_tiers`)
        # or none (`num_tiers + 1`)
        unused = ops.where(valid, num_tiers, num_tiers + 1)
        tier = count_bounds_reached(safe, self._tier_bounds) if num_tiers > 1 else 0
        piece = ops.where(admitted, tier, unused)
        if plan.fallback == "qr":
            quotient, remainder = nonnegative_divmod(bucket, plan.fallback_tables[1])
            fallback = {"fallback_quotient": quotient, "fallback_remainder": remainder}
        else:
            fallback = {"fallback_embeddings": bucket}
        fallback = {name: rows + layout.start[name] if layout.start[name] else rows
                    for name, rows in fallback.items()}
        lanes = {}   # variable -> [rows of each lane]
        for name, rows in fallback.items():
            lanes.setdefault(layout.buffer[name], []).append(rows)
        for t in range(num_tiers):
            name = f"tier_{t}_embeddings"
            lane = lanes.setdefault(layout.buffer[name], [])
            if not lane:
                lane.append(self._tier_rows(safe, t))
            else:
                # the first lane of the variable is the fallback's first
                # part's or another tier's: always in range where not this tier's
                shift = layout.start[name] - int(self.id_map.offsets[t])
                lane[0] = ops.where(ops.equal(piece, t), safe + shift if shift else safe,
                                    lane[0])
        values = {}
        for b, rows in lanes.items():
            table = self.width_tables[b]
            gathered = take_rows_in_range(table, rows[0] if len(rows) == 1 else ops.stack(rows))
            values[b] = [gathered] if len(rows) == 1 else ops.unstack(gathered, len(rows), axis=0)
        pieces = [values[layout.buffer[f"tier_{t}_embeddings"]][0] for t in range(num_tiers)]
        first = values[layout.buffer[next(iter(fallback))]]
        if plan.fallback == "qr":
            # the quotient's lane holds a tier's row for the ids of that
            # tier: selected away before the product, or a diverged tier row
            # would give its bucket's remainder row (read by fallback ids) a
            # 0 * inf gradient
            reads = ops.expand_dims(ops.equal(piece, num_tiers), -1)
            pieces.append(ops.where(reads, first[0], ops.zeros_like(first[0])) * first[1])
        else:
            pieces.append(first[0])
        full = [g for g in range(len(pieces)) if g not in self._projected_pieces]
        if self._projection_rows.size:
            stacked = ops.concatenate([pieces[g] for g in self._projected_pieces], axis=-1)
            # a select, not a product with the mask: 0 * inf is NaN, and the
            # rows an id does not read (clipped or shared lanes) are other
            # ids' rows, so one diverged row would reach every id's output
            # (each stacked column's piece against the id's)
            keep = equals_columns(piece, self._piece_columns, num_tiers + 2)
            outputs = ops.matmul(ops.where(keep, stacked, ops.zeros_like(stacked)),
                                 self._stacked_projections())
        else:
            outputs = ops.zeros_like(pieces[full[-1]])
        for g in full:
            outputs = ops.where(ops.expand_dims(ops.equal(piece, g), -1), pieces[g], outputs)
        return outputs, valid

    def _tier_rows(self, safe, t):
        """Rows of slots `safe` in the variable of tier `t`'s table: a slot
        of the tier's its row; any other slot some row of the variable
        (what it reads there is masked), clipped only where it could leave
        the variable."""
        name = f"tier_{t}_embeddings"
        shift = self.layout.start[name] - int(self.id_map.offsets[t])
        last = int(self.width_tables[self.layout.buffer[name]].shape[0]) - 1
        rows = safe + shift if shift else safe
        below, above = shift < 0, self.id_map.num_slots - 1 + shift > last
        if below and above:
            return ops.clip(rows, 0, last)
        if below:
            return ops.maximum(rows, 0)
        return ops.minimum(rows, last) if above else rows

    def _stacked_projections(self):
        """`(sum of widths, output_dim)`: the projections of the projected
        pieces (`_projected_pieces`), stacked in order."""
        return take_rows_in_range(
            self.width_tables[self.layout.widths.index(self.output_dim)],
            self._projection_rows)

    def _apply_writes(self, writes):
        """Row writes carried by the batch, in place, before any read.

        Each entry is `(slot, source slot, fallback bucket, tag)`: the slot's
        row becomes the source slot's current output (a tier move) or the
        bucket's fallback output (an admission, or a deferred move), mapped
        into the slot's tier by least squares; its optimizer slots start
        fresh and its tag is set. Every value is read before anything is
        written. Padding entries (slot -1) rewrite row 0 of the tier with its
        own values; `prepare` pads a tier that has writes with copies of its
        first entry, so duplicate indices always carry equal values.

        Where the step runs eagerly (PyTorch: the backend's
        `CONCRETE_WRITES`) the entries that write are picked on the host
        (`_host_writes`); traced steps run `_graph_writes`. Both leave the
        same rows, slots and tags.
        """
        backend = row_writes()
        entries = backend.concrete_writes(writes) if backend.CONCRETE_WRITES else None
        if entries is not None:
            self._host_writes(entries, backend)
            return
        self._graph_writes(writes)

    def _graph_writes(self, writes):
        """`_apply_writes` with tensor ops of static shapes (the traced steps
        of TensorFlow and JAX). Each entry's tier bounds and row offset are
        numpy constants, so the checks run once over all entries, not once
        per tier: the op count, not the few rows, is what a step pays."""
        num_tiers, width = self.num_tiers, self.max_writes
        writes = ops.reshape(ops.cast(writes, "int32"), (num_tiers * width, 4))
        layout, offsets = self.layout, self.id_map.offsets
        tier = np.repeat(np.arange(num_tiers), width)
        first = offsets[tier].astype(np.int32)
        # every entry's source vector in one pass, before any row is written
        sources = writes[:, 1]
        stored = ops.logical_and(ops.greater_equal(sources, 0),
                                 ops.less(sources, self.id_map.num_slots))
        vectors, _ = self._vectors(ops.where(stored, sources, 0), stored, writes[:, 2])
        dest = writes[:, 0]
        # an entry outside its tier (padding, or a malformed input) writes
        # nothing: it rewrites the tier's first row with that row's values
        valid = ops.logical_and(ops.greater_equal(dest, first),
                                ops.less(dest, offsets[tier + 1].astype(np.int32)))
        slots = ops.where(valid, dest, first)
        starts = np.array([layout.start[f"tier_{t}_embeddings"] for t in range(num_tiers)])
        rows = ops.add(slots, (starts[tier] - first).astype(np.int32))
        keep = ops.expand_dims(ops.logical_not(valid), -1)
        # one gather and one scatter per variable (and per optimizer slot of
        # it) for the entries of every tier it holds
        optimizer = self._write_optimizer_ref.value
        for b in sorted({layout.buffer[f"tier_{t}_embeddings"] for t in range(num_tiers)}):
            tiers = [t for t in range(num_tiers) if layout.buffer[f"tier_{t}_embeddings"] == b]
            values = []
            for t in tiers:
                mapped = vectors[t * width:(t + 1) * width]
                if f"tier_{t}_projection" in layout.start:
                    mapped = ops.matmul(mapped, self._tier_pinv(
                        t, valid[t * width:(t + 1) * width]))
                values.append(mapped)
            values = values[0] if len(values) == 1 else ops.concatenate(values, axis=0)
            if tiers == list(range(tiers[0], tiers[-1] + 1)):
                entries = slice(tiers[0] * width, (tiers[-1] + 1) * width)
                buffer_rows, buffer_keep = rows[entries], keep[entries]
            else:
                entries = np.concatenate([np.arange(t * width, (t + 1) * width) for t in tiers])
                buffer_rows, buffer_keep = (ops.take(x, entries, axis=0) for x in (rows, keep))
            buffer = self.width_tables[b]
            current = take_rows(buffer, buffer_rows)
            zero_where = []
            written = ops.where(buffer_keep, current, values)
            for slot in self._slots(optimizer, buffer) if optimizer is not None \
                    and optimizer.built else []:
                kept = take_rows(slot, buffer_rows)
                mask = buffer_keep if len(kept.shape) == 2 else buffer_keep[:, 0]  # row-wise
                zero_where.append((slot, ops.where(
                    mask, kept, _fresh_slot_rows(optimizer, slot, written))))
            _write_rows(buffer, buffer_rows, written)
            for slot, kept in zero_where:
                _write_rows(slot, buffer_rows, kept)
        # a gather on the variable: a dense read would copy the whole tags
        # variable each step (TensorFlow copies on read once it is gathered)
        tags = ops.where(valid, writes[:, 3], take_rows(self.slot_tags, slots))
        # tiers' padding rows are distinct slots, so one scatter of the tags
        # has no duplicate index with unequal values
        _write_rows(self.slot_tags, slots, tags)

    def _tier_pinv(self, t, valid):
        """Pseudo-inverse of tier `t`'s projection. In a traced step (`valid`:
        which of the tier's entries write) the SVD runs only on a batch that
        writes to the tier: most batches write only the narrowest tier (new
        ids); there a width-1 tier's is `p / (p . p)`. (The host path,
        `_host_writes`, takes the backend's `pinv` of written tiers only.)"""
        name = f"tier_{t}_projection"
        projection = self.part(name)
        if int(self.plan.tier_dims[t]) == 1:
            norm = ops.sum(projection * projection)
            scale = ops.where(ops.greater(norm, 0.0), 1.0 / ops.where(
                ops.greater(norm, 0.0), norm, ops.ones_like(norm)), ops.zeros_like(norm))
            return ops.transpose(projection * scale)
        shape = (self.output_dim, int(self.plan.tier_dims[t]))
        return ops.cond(ops.any(valid), functools.partial(_pinv, projection),
                        functools.partial(ops.zeros, shape, "float32"))

    def _host_writes(self, entries, backend):
        """`_apply_writes` where the step runs eagerly and the writes are
        concrete (PyTorch): the entries that write are picked on the host,
        so a batch that writes nothing runs no tensor op, a slot named again
        (`prepare`'s padding repeats an entry with the same values) is
        computed once, and only written tiers get a pseudo-inverse."""
        offsets, tier_rows = self.id_map.offsets, self.plan.tier_rows
        entries = np.asarray(entries, np.int64).reshape(self.num_tiers, self.max_writes, 4)
        dest = entries[..., 0]
        starts = np.asarray(offsets[:-1], np.int64)[:, None]
        # an entry outside its own tier (padding, or a malformed input)
        # writes nothing
        valid = (dest >= starts) & (dest < starts + np.asarray(tier_rows, np.int64)[:, None])
        if not valid.any():
            return
        # sorted by slot, hence tier by tier
        slots, first = np.unique(dest[valid], return_index=True)
        chosen = entries[valid][first]
        sources = chosen[:, 1]
        stored = (sources >= 0) & (sources < self.id_map.num_slots)
        bounds = np.searchsorted(slots, offsets)
        optimizer = self._write_optimizer_ref.value
        slots_of = (lambda buffer: self._slots(optimizer, buffer)) \
            if optimizer is not None and optimizer.built else (lambda buffer: [])
        # the backend's own ops (a few per written tier): every source's
        # vector first, each entry's own piece (an admission's fallback
        # vector, a moved row's old output), then the rows, their optimizer
        # slots (as `_fresh_slot_rows` sets them) and the tags
        backend.host_writes(self, slots, np.where(stored, sources, -1), chosen[:, 2],
                            chosen[:, 3], bounds, slots_of,
                            functools.partial(slot_initial_value, optimizer))

    @property
    def _tier_bounds(self):
        return [int(b) for b in self.id_map.offsets[1:-1]]

    def fallback_buckets(self, keys):
        """Fallback bucket of raw int64 `keys` (numpy; the serving graph
        computes the same with `hashes.buckets` on the key's pieces)."""
        return hashes.buckets_of_columns(key_columns(keys), self._hash,
                                         self.plan.fallback_range)

    def _pack(self, keys, mask):
        unique, inverse, _ = _unique(keys if mask is None else keys[mask])
        slots, tags = self.id_map.lookup(unique)
        return self._packed(keys, mask, inverse,
                            _distinct(slots, tags, self.fallback_buckets(unique)))

    @staticmethod
    def _packed(keys, mask, inverse, distinct):
        """Each key's row of `distinct` (`inverse` indexes the unmasked
        keys); padding packs as `(-1, 0, -1)`: no row, no tag, no bucket."""
        # `take` along an axis: several times faster than `distinct[inverse]`
        rows = distinct.take(inverse, axis=0)
        if mask is None:
            return rows.reshape(*keys.shape, PACKED)
        packed = np.full((*keys.shape, PACKED), -1, np.int32)
        packed[..., 1] = 0
        packed[mask] = rows
        return packed

    def _keys_and_mask(self, ids, mask):
        """Raw keys and the padding mask; ragged bags (a list of lists) are
        padded to `bag_size`."""
        if isinstance(ids, (list, tuple)) and ids and all(
                isinstance(bag, (list, tuple, np.ndarray)) for bag in ids) and (
                self.bag_size is not None or len({len(bag) for bag in ids}) > 1):
            if mask is not None:
                raise ValueError("Pass either ragged bags or `mask`, not both.")
            if self.bag_size is None:
                lengths = sorted({len(bag) for bag in ids})
                raise ValueError(
                    f"Layer {self.name!r} got ragged bags (lengths {lengths[0]} to "
                    f"{lengths[-1]}) but has bag_size=None: padding each batch to its "
                    f"longest bag would change the input shape from batch to batch "
                    f"(a retrace of the compiled step each time). Give the layer "
                    f"`bag_size` (longer bags keep their first `bag_size` ids), or "
                    f"pad the ids to a fixed width and pass `mask=`.")
            width = self.bag_size
            keys = np.zeros((len(ids), width), np.int64)
            mask = np.zeros((len(ids), width), bool)
            for i, bag in enumerate(ids):
                bag = raw_keys(np.asarray(bag)).ravel()[:width] if len(bag) else []
                keys[i, : len(bag)] = bag
                mask[i, : len(bag)] = True
            return keys, mask
        # int64 ids as they are: the host map only reads them (`raw_keys`
        # copies)
        keys = ids if type(ids) is np.ndarray and ids.dtype == np.int64 else raw_keys(ids)
        if mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != keys.shape:
                raise ValueError(f"`mask` must have the ids' shape {keys.shape}. "
                                 f"Received: {mask.shape}")
        return keys, mask

    def compute_output_shape(self, input_shape):
        ids_shape = tuple(input_shape)[:-1]
        if self.combiner is not None:
            check_bag_rank(ids_shape, self.combiner, self.name)
            ids_shape = ids_shape[:-1]
        return (*ids_shape, self.output_dim)

    # ------------------------------------------------------------ host

    def lookup_ids(self, ids, mask=None):
        """Packed int32 ids for `ids` (raw int64 or strings, or ragged bags)
        without counting them: for prediction, evaluation and serving-time
        parity. `mask` (False for padding) as in `update`."""
        keys, mask = self._keys_and_mask(ids, mask)
        return self._pack(keys, mask)

    def prepare(self, ids, timestamps=None, mask=None):
        """`update` without touching any variable: counts `ids`, admits,
        evicts and rebalances on the host, and returns the packed ids with
        the row writes the train step applies (`call(..., writes=)`), so
        that it can run in the input pipeline of `model.fit`
        (`keras_mixed_dim.dynamic.dynamic_batches` does it for you).

        At most `max_writes` writes per tier ride on one batch; the rest are
        deferred to the next batches (a deferred tier move starts from the
        id's fallback vector instead of its old row). Until its write is
        applied an id reads the fallback (its tag is only set by the write),
        never another id's row.

        Args:
            ids, timestamps, mask: As in `update`.

        Returns:
            `(packed, writes)`: int32 `ids.shape + (3,)` and int32
            `(1, num_tiers, max_writes, 4)`.
        """
        mapped = self._map_batch(ids, timestamps, mask)
        return mapped.pack(self.fallback_buckets(mapped.hashed))

    def _map_batch(self, ids, timestamps=None, mask=None):
        """`prepare` up to the fallback buckets: counts, admits, evicts and
        plans the writes, and returns a `_Mapped` batch that `pack`s once
        given the buckets of its `hashed` keys. Everything read from the id
        map is read here, so that `dynamic_batches` can map every layer of
        a batch (one layer may serve two features) and then hash all their
        keys in one pass (`keras_mixed_dim.dynamic.stream.joint_buckets`)."""
        keys, mask = self._keys_and_mask(ids, mask)
        if timestamps is not None and mask is not None and np.shape(timestamps) == keys.shape:
            timestamps = np.asarray(timestamps)[mask]
        id_map = self.id_map
        # slots whose write is still pending (most batches: none)
        pending = id_map.dirty.nonzero()[0] if id_map.dirty.any() else None
        unique, inverse, counts = _unique(keys if mask is None else keys[mask])
        slots = id_map.find_distinct(unique)
        changes = id_map.update_found(unique, counts, slots, timestamps)
        mapped = _Mapped(keys, mask, inverse, self._no_writes_shape)
        hashed = unique
        if pending is not None or not changes.empty:
            dest, sources = self._write_entries(pending, changes)
            if dest.size:
                # grouped by tier, each tier's in plan order; its first
                # `max_writes` ride on this batch, the rest are deferred
                tiers = id_map.tier_of[dest]
                if self.num_tiers > 1:
                    order = np.argsort(tiers, kind="stable")
                    dest, sources, tiers = dest[order], sources[order], tiers[order]
                rank = np.arange(dest.size) - tiers.searchsorted(tiers)
                now = rank < self.max_writes
                if not now.all():
                    id_map.dirty[dest[~now]] = True
                    dest, sources, tiers, rank = dest[now], sources[now], tiers[now], rank[now]
                mapped.written = (dest, sources, id_map.tags[dest], tiers, rank)
                # one hash of the batch's distinct keys and the written slots' keys
                hashed = np.concatenate([unique, id_map.keys[dest]])
        mapped.hashed = hashed
        if not self.built:
            self.build((*keys.shape, PACKED))
        # the batch's slots after the update: an admission gives a batch key
        # its slot, and only a tier move (every `rebalance_every` steps)
        # moves the others; evictions never take a key of the batch
        if changes.move_from.size:
            slots = id_map.find_distinct(unique)
        elif changes.reset_slots.size:
            slots = slots.copy()
            slots[unique.searchsorted(changes.reset_keys)] = changes.reset_slots
        mapped.slots = slots
        mapped.tags = np.where(slots >= 0, id_map.tags[np.maximum(slots, 0)], 0)
        return mapped

    @property
    def _no_writes_shape(self):
        return (1, self.num_tiers, self.max_writes, 4)

    def _write_entries(self, pending, changes):
        """`(slots, sources)` of the row writes after an update, in the order
        they are taken (first `max_writes` per tier now, the rest deferred):
        the pending slots still held (ascending), the admitted ones, then
        the tier moves; a slot listed twice keeps its last place and source.
        A source -1 means the slot's key's fallback."""
        id_map = self.id_map
        reset, moved = changes.reset_slots, changes.move_to
        if pending is None and not moved.size:
            # most batches: admissions only
            return reset, np.full(reset.size, -1, np.int64)
        held = _empty_slots() if pending is None else pending[id_map.used[pending]]
        if moved.size:
            # a source whose own write is pending holds another key's row
            stale = np.concatenate([reset] if pending is None else [reset, pending])
            sources = np.where(_isin(changes.move_from, stale), -1, changes.move_from)
            held = held[~_isin(held, moved)]
            reset = reset[~_isin(reset, moved)]
        else:
            sources = _empty_slots()
        if held.size and reset.size:
            held = held[~_isin(held, reset)]
        if pending is not None:
            # every pending write is planned again (a freed slot's is
            # dropped: its tag never reaches the layer)
            id_map.dirty[pending] = False
        slots = np.concatenate([held, reset, moved])
        return slots, np.concatenate([np.full(held.size + reset.size, -1, np.int64),
                                      sources])

    def no_writes(self):
        """The `writes` of a batch that writes nothing (prediction)."""
        return np.full((1, self.num_tiers, self.max_writes, 4), -1, np.int32)

    def writes_input(self, name=None):
        """A `keras.Input` for the `writes` that `prepare` returns."""
        return keras.Input((self.num_tiers, self.max_writes, 4), batch_size=1,
                           dtype="int32", name=name)

    def attach_optimizer(self, optimizer):
        """The optimizer whose slots in-step row writes reset (the model's)."""
        jax_step = self._write_optimizer_ref.jax_step
        self._write_optimizer_ref = _Holder(optimizer)
        self._write_optimizer_ref.jax_step = jax_step

    def update(self, ids, timestamps=None, optimizer=None, mask=None):
        """Counts `ids`, admits, evicts and rebalances, applies the changes
        to the rows (and to `optimizer`'s slots), and returns the packed
        int32 ids for the model. Call it between training steps (or
        `fit` calls), in stream order.

        Args:
            ids: Raw ids (int64 of any value, or strings), any shape.
            timestamps: Optional integer times (recency and `ttl` units).
            optimizer: The model's optimizer, whose slots follow the rows;
                its slots are also counted against `capacity_bytes`.
            mask: Optional boolean array of the ids' shape, False for
                padding (not counted, reads zeros, left out of bags).

        Returns:
            int32 numpy array `ids.shape + (3,)`.
        """
        keys, mask = self._keys_and_mask(ids, mask)
        if self.id_map.dirty.any():
            raise RuntimeError(
                f"Layer {self.name!r} has row writes deferred by `prepare` that no "
                f"train step has applied yet; keep feeding it with `prepare` (a "
                f"batch with fewer new ids applies them).")
        if not self.built:
            self.build((*keys.shape, PACKED))
        if timestamps is not None and mask is not None and np.shape(timestamps) == keys.shape:
            timestamps = np.asarray(timestamps)[mask]
        changes = self.id_map.update(keys if mask is None else keys[mask], timestamps)
        if not changes.empty:
            self._apply(changes, optimizer)
        if optimizer is not None:
            self.check_bytes(optimizer)
        return self._pack(keys, mask)

    def _slots(self, optimizer, variable):
        if optimizer is None:
            return []
        # found by name once per optimizer state (slots appear when it
        # builds); a plain object, so Keras does not track the optimizer's
        # variables as the layer's
        key = (id(optimizer), len(optimizer.variables))
        cache = getattr(self, "_slot_cache", None)
        if cache is None or cache.key != key:
            cache = self._slot_cache = _SlotCache(
                key, {id(v): slot_variables(optimizer, v) for v in self.weights})
        return cache.slots.get(id(variable), [])

    def _apply(self, changes, optimizer):
        tier_of, offsets = self.id_map.tier_of, self.id_map.offsets
        involved = set(tier_of[changes.reset_slots].tolist()) | set(
            tier_of[changes.move_to].tolist())
        pinvs = [None if t not in involved or self._read_part(f"tier_{t}_projection") is None
                 else np.linalg.pinv(self._read_part(f"tier_{t}_projection"))
                 for t in range(self.num_tiers)]
        writes = {t: ([], []) for t in range(self.num_tiers)}
        if changes.move_from.size:
            # old outputs of every mover, read before any row is written
            sources = self._outputs_of_slots(changes.move_from, changes.reset_slots,
                                             changes.reset_keys, pinvs)
        if changes.reset_slots.size:
            vectors = self.fallback_outputs(changes.reset_keys)
            for t in range(self.num_tiers):
                mask = tier_of[changes.reset_slots] == t
                if mask.any():
                    rows = vectors[mask] if pinvs[t] is None else vectors[mask] @ pinvs[t]
                    writes[t][0].append(changes.reset_slots[mask] - offsets[t])
                    writes[t][1].append(rows)
        if changes.move_from.size:
            for t in range(self.num_tiers):
                mask = tier_of[changes.move_to] == t
                if mask.any():
                    rows = sources[mask] if pinvs[t] is None else sources[mask] @ pinvs[t]
                    writes[t][0].append(changes.move_to[mask] - offsets[t])
                    writes[t][1].append(rows)
        for t, (rows, values) in writes.items():
            if not rows:
                continue
            # later writes win (a reset row that also moved keeps the move)
            rows, values = np.concatenate(rows), np.concatenate(values)
            _, last = np.unique(rows[::-1], return_index=True)
            keep = rows.size - 1 - last
            rows, values = rows[keep], values[keep]
            name = f"tier_{t}_embeddings"
            buffer = self.width_tables[self.layout.buffer[name]]
            rows = rows + self.layout.start[name]
            values = values.astype("float32")
            _assign_rows(buffer, rows, values)
            for slot in self._slots(optimizer, buffer):
                _assign_rows(slot, rows, _fresh_slot_rows(optimizer, slot, values))
        self.slot_tags.assign(self.id_map.tags)

    def _outputs_of_slots(self, slots, reset_slots, reset_keys, pinvs):
        """float64 output vectors of the keys held by `slots` before this
        step's writes (for a just-admitted key, its fallback vector)."""
        tier_of, offsets = self.id_map.tier_of, self.id_map.offsets
        result = np.zeros((slots.size, self.output_dim))
        for t in range(self.num_tiers):
            mask = tier_of[slots] == t
            if not mask.any():
                continue
            rows = self._read_part(f"tier_{t}_embeddings", slots[mask] - offsets[t])
            projection = self._read_part(f"tier_{t}_projection")
            result[mask] = rows if projection is None else rows @ projection
        if reset_slots.size:
            fresh = np.isin(slots, reset_slots)
            if fresh.any():
                position = {int(s): i for i, s in enumerate(reset_slots)}
                keys = reset_keys[[position[int(s)] for s in slots[fresh]]]
                result[fresh] = self.fallback_outputs(keys)
        return result

    def fallback_outputs(self, keys):
        """float64 fallback vectors of raw int64 `keys` (host copy of the
        graph's fallback path)."""
        buckets = self.fallback_buckets(keys)
        if self.plan.fallback == "hashing":
            rows = self._read_part("fallback_embeddings", buckets)
        else:
            remainder = self.plan.fallback_tables[1]
            rows = (self._read_part("fallback_quotient", buckets // remainder)
                    * self._read_part("fallback_remainder", buckets % remainder))
        projection = self._read_part("fallback_projection")
        return rows if projection is None else rows @ projection

    def _read_part(self, name, rows=None):
        """float64 numpy copy of part `name` (its rows `rows`, or all of
        it), reading only those rows; None for a part the layer does not
        have."""
        if name not in self.layout.start:
            return None
        rows = self.layout.rows(name) if rows is None else (
            np.asarray(rows, np.int64) + self.layout.start[name])
        buffer = self.width_tables[self.layout.buffer[name]]
        return _read_rows(buffer, rows).astype(np.float64)

    # ------------------------------------------------------------ bytes

    @property
    def bytes(self):
        """Planned bytes of everything the layer holds (never above
        `capacity_bytes`)."""
        return self.plan.bytes

    def measured_bytes(self, optimizer=None):
        """Bytes actually held: the layer's variables, `optimizer`'s slots
        for them (or the planned `optimizer_slots` copies without one), the
        id map and sketch, and the hash constants."""
        if optimizer is not None:
            self._slots(optimizer, None)
            cache = self._slot_cache
            if cache.measured is not None:
                return cache.measured
        total = self.id_map.bytes + self._hash.num_constants * 4
        for variable in self.weights:
            size = _nbytes(variable)
            total += size
            if variable.trainable:
                if optimizer is None:
                    total += size * self.optimizer_slots
                else:
                    total += sum(_nbytes(s) for s in self._slots(optimizer, variable))
        # the id map's tag array and the slot_tags variable are both counted;
        # every shape is fixed, so the sum holds until the optimizer changes
        if optimizer is not None:
            cache.measured = total
        return total

    def check_bytes(self, optimizer=None):
        """`measured_bytes(optimizer)`, refused when above `capacity_bytes`.

        Args:
            optimizer: The model's optimizer, whose slots for the layer's
                weights are measured (None: `optimizer_slots` copies).

        Returns:
            The measured bytes (an int).

        Raises:
            RuntimeError: When they exceed `capacity_bytes` (the optimizer
                keeps more slots per weight than `optimizer_slots`).
        """
        measured = self.measured_bytes(optimizer)
        if measured > self.capacity_bytes:
            raise RuntimeError(
                f"Layer {self.name!r} holds {measured} bytes, above its "
                f"capacity_bytes={self.capacity_bytes}: the optimizer keeps more "
                f"slots per weight than optimizer_slots={self.optimizer_slots}.")
        return measured

    # ------------------------------------------------------------ saving

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for name, value in self.id_map.get_state().items():
            store[f"id_map_{name}"] = value.astype(np.uint8) if value.dtype == bool \
                else value

    def load_own_variables(self, store):
        layout, count = self.layout, len(self.width_tables)
        if f"{count + 1}" in store:
            # saved when every table and projection was its own variable (in
            # the order of the layout's parts), the tags after them; a layout
            # has fewer variables than parts, so the key count tells them apart
            values = [np.zeros(tuple(v.shape), "float32") for v in self.width_tables]
            views = layout.views(values)
            for i, name in enumerate(layout.names):
                value = np.asarray(store[f"{i}"])
                if value.shape != layout.shape[name]:
                    raise ValueError(
                        f"Layer {self.name!r}: saved variable {i} ({name}) has shape "
                        f"{value.shape}; this layer's {name} has shape "
                        f"{layout.shape[name]} (another capacity or tiers?).")
                views[name][...] = value
            tags = np.asarray(store[f"{len(layout.names)}"])
        else:
            values = [np.asarray(store[f"{i}"]) for i in range(count)]
            for variable, value in zip(self.width_tables, values):
                if value.shape != tuple(variable.shape):
                    raise ValueError(
                        f"Layer {self.name!r}: saved {variable.name} has shape "
                        f"{value.shape}; this layer's has shape {tuple(variable.shape)} "
                        f"(another capacity or tiers?).")
            tags = np.asarray(store[f"{count}"])
        for variable, value in zip(self.width_tables, values):
            variable.assign(value)
        self.slot_tags.assign(tags)
        state = {}
        for name in (*DynamicIdMap.STATE, "sketch", "scalars"):
            if name == "dirty" and f"id_map_{name}" not in store:
                # saved before deferred writes existed
                state[name] = np.zeros(self.id_map.num_slots, bool)
                continue
            state[name] = np.asarray(store[f"id_map_{name}"])
        state["used"] = state["used"].astype(bool)
        state["dirty"] = state["dirty"].astype(bool)
        self.id_map.set_state(state)

    def get_config(self):
        config = super().get_config()
        plan = self.plan
        config.update({
            "output_dim": self.output_dim,
            "capacity_bytes": self.capacity_bytes,
            "min_count": self.min_count,
            "eviction": self.eviction,
            "ttl": self.ttl,
            "tier_dims": list(plan.tier_dims),
            "decay": self.decay,
            "rebalance_every": self.rebalance_every,
            "fallback_buckets": plan.fallback_buckets,
            "fallback_dim": plan.fallback_dim,
            "sketch_width": plan.sketch_width,
            "sketch_depth": plan.sketch_depth,
            "optimizer_slots": self.optimizer_slots,
            "combiner": self.combiner,
            "bag_size": self.bag_size,
            "embeddings_initializer": initializers.serialize(self.embeddings_initializer),
            "seed": self.seed,
            "max_writes": self.max_writes,
            "fallback": plan.fallback,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # configs saved before `fallback` existed describe a hashed fallback;
        # the QR default would give their weights other shapes
        config.setdefault("fallback", "hashing")
        return cls(**config)


# keys from which `_unique` counts dense ids instead of sorting them (below
# it the range check costs about what the count saves)
_COUNT_FROM = 1024


def _unique(keys):
    """`np.unique(keys, return_inverse=True, return_counts=True)` of the
    flattened keys (sorted distinct keys, each key's index among them, and
    their counts) with fewer passes than numpy's general version."""
    flat = keys.ravel()
    if not flat.size:
        return flat.copy(), np.zeros(0, np.intp), np.zeros(0, np.intp)
    if flat.size >= _COUNT_FROM:
        low = int(flat.min())
        span = int(flat.max()) - low + 1
        if span <= 2 * flat.size:
            # dense ids (a vocabulary's indices): a count per value in the
            # keys' range replaces the sort, measured 3-4x faster at 4096
            # keys up to a range of twice the keys (beyond it the range's
            # passes cost more than the sort)
            offsets = flat - low
            counts = np.bincount(offsets, minlength=span)
            present = counts.nonzero()[0]
            position = np.empty(span, np.intp)
            position[present] = np.arange(present.size)
            return present + low, position[offsets], counts[present]
    order = flat.argsort()
    ordered = flat[order]
    first = np.empty(flat.size, bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    starts = first.nonzero()[0]
    counts = np.empty(starts.size, np.intp)
    np.subtract(starts[1:], starts[:-1], out=counts[:-1])
    counts[-1] = flat.size - starts[-1]
    inverse = np.empty(flat.size, np.intp)
    # each sorted position's group by `repeat`: a cumulative sum of the
    # boolean `first` casts every element
    inverse[order] = np.arange(starts.size).repeat(counts)
    return ordered[starts], inverse, counts


def _distinct(slots, tags, buckets):
    """int32 `(n, 3)`: the packed ids of n distinct keys."""
    packed = np.empty((np.size(slots), PACKED), np.int32)
    packed[:, 0], packed[:, 1], packed[:, 2] = slots, tags, buckets
    return packed


class _Mapped:
    """One layer's batch after `DynamicEmbedding._map_batch`: what `pack`
    needs besides the fallback buckets of `hashed` (the batch's distinct
    keys, then the written slots' keys)."""

    __slots__ = ("keys", "mask", "inverse", "shape", "slots", "tags", "written", "hashed")

    def __init__(self, keys, mask, inverse, shape):
        self.keys, self.mask, self.inverse, self.shape = keys, mask, inverse, shape
        self.written = None

    def pack(self, buckets):
        """`(packed, writes)` as `prepare` returns them."""
        writes = np.full(self.shape, -1, np.int32)
        n = self.slots.size
        if self.written is not None:
            dest, sources, tags, tiers, rank = self.written
            rows = np.empty((dest.size, 4), np.int32)
            rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] = dest, sources, buckets[n:], tags
            # a tier's unused entries repeat its first write: duplicate
            # indices in the step always carry equal values
            first = rank == 0
            writes[0, tiers[first]] = rows[first][:, None, :]
            writes[0, tiers, rank] = rows
        distinct = _distinct(self.slots, self.tags, buckets[:n])
        return DynamicEmbedding._packed(self.keys, self.mask, self.inverse, distinct), writes


def _isin(values, within):
    """`np.isin` for the few slots of one batch's writes: one broadcast
    comparison where it is small (np.isin's setup costs more)."""
    if values.size * within.size <= 65536:
        return (values[:, None] == within[None, :]).any(axis=1)
    return np.isin(values, within)


def _empty_slots():
    return np.zeros(0, np.int64)


def _nbytes(variable):
    return int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize


class _Layout:
    """Where each part (a tier's table or projection, a fallback table or
    its projection) lives: a part of shape `(rows, width)` is a range of
    rows of the variable of its width (`width_tables[buffer[name]]`).

    Args:
        parts: `(name, shape)` pairs, in order.
    """

    def __init__(self, parts):
        self.names = [name for name, _ in parts]
        self.widths, self.buffer, self.start, self.shape = [], {}, {}, {}
        used = []
        for name, shape in parts:
            rows, width = (int(n) for n in shape)
            if width not in self.widths:
                self.widths.append(width)
                used.append(0)
            b = self.widths.index(width)
            self.buffer[name], self.start[name], self.shape[name] = b, used[b], (rows, width)
            used[b] += rows

    def rows(self, name):
        """int32 rows of part `name` in its variable."""
        return self.start[name] + np.arange(self.shape[name][0], dtype=np.int32)

    def span(self, name):
        """The rows of part `name` in its variable, as a slice."""
        return slice(self.start[name], self.start[name] + self.shape[name][0])

    def locate(self, name):
        """`(variable index, slice of its rows)` of part `name`, or None
        for a part the layer lacks (what the backends' lookups index)."""
        return (self.buffer[name], self.span(name)) if name in self.start else None

    def view(self, arrays, name):
        """Part `name` of `arrays` (one per variable; a view), or None for a
        part the layer lacks."""
        return arrays[self.buffer[name]][self.span(name)] if name in self.start else None

    def views(self, arrays):
        """`{name: view}` of each part in `arrays` (one per variable)."""
        return {name: self.view(arrays, name) for name in self.names}


class _Constant:
    """An initializer that gives a fixed numpy value."""

    def __init__(self, value):
        self.value = value

    def __call__(self, shape, dtype=None):
        return ops.cast(ops.reshape(ops.convert_to_tensor(self.value), shape), dtype or "float32")


class _Holder:
    def __init__(self, value):
        self.value = value
        self.jax_step = False


class _SlotCache:
    def __init__(self, key, slots):
        self.key = key
        self.slots = slots
        self.measured = None


def _fresh_slot_rows(optimizer, slot, rows):
    """What `slot` holds at rows handed to a new id, whose weights are now
    `rows` (numpy on the host path, tensors in the step): the value a new
    slot starts from (`slot_initial_value`: zeros for Adam's moments,
    `initial_accumulator_value` for an accumulator, for FTRL's `linear` the
    value from which FTRL's next step recomputes `rows`). Zeros would not
    do for FTRL: an entry with a zero accumulator and a zero gradient is
    0 / 0 at its next step."""
    fill = slot_initial_value(optimizer, slot)
    if callable(fill):
        return ops.cast(fill(rows), slot.dtype) if not isinstance(rows, np.ndarray) \
            else np.asarray(fill(rows), slot.dtype)
    shape = (rows.shape[0], *slot.shape[1:])
    if isinstance(rows, np.ndarray):
        return np.full(shape, fill, slot.dtype)
    return ops.full(shape, fill, slot.dtype)


def _pinv(projection):
    """Pseudo-inverse of a `(width, output_dim)` projection in the graph
    (what `np.linalg.pinv` gives on the host path), by SVD."""
    u, s, vh = ops.svd(ops.convert_to_tensor(projection), full_matrices=False)
    keep = ops.greater(s, ops.max(s) * 1e-6)
    inverse = ops.where(keep, 1.0 / ops.where(keep, s, ops.ones_like(s)), ops.zeros_like(s))
    return ops.matmul(ops.transpose(vh) * inverse, ops.transpose(u))


def _write_rows(variable, rows, values):
    """`variable[rows] = values` inside a step (tensors)."""
    row_writes().write_rows(variable, rows, values)


def _read_rows(variable, rows):
    """Rows of a variable as numpy."""
    return row_writes().read_rows(variable, rows)


def _assign_rows(variable, rows, values):
    """`variable[rows] = values` between steps, in place where the backend
    can write in place."""
    row_writes().assign_rows(variable, rows, values)
