"""`StackedEmbedding`: every feature's tables in a few shared variables."""

import contextlib

import keras
import numpy as np
from keras import initializers
from keras import ops
from keras import regularizers
from keras import saving

from keras_mixed_dim.backend import dense_gradient
from keras_mixed_dim.backend import is_ragged_or_sparse
from keras_mixed_dim.backend import padded_bags
from keras_mixed_dim.backend import residual_gradient
from keras_mixed_dim.backend import split_columns
from keras_mixed_dim.backend import take_columns
from keras_mixed_dim.backend import take_rows
from keras_mixed_dim.backend.row_gradients import flag_table
from keras_mixed_dim.budgets import COUNT_BYTES
from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.budgets import REMAP_BYTES
from keras_mixed_dim.checks import check_positive_int
from keras_mixed_dim.layers.ids import is_host_array
from keras_mixed_dim.layers.ids import sanitize_numpy_ids
from keras_mixed_dim.layers.ids import valid_int_ids
from keras_mixed_dim.layers.lookup import add_lookup_counts
from keras_mixed_dim.layers.lookup import bag_coefficients
from keras_mixed_dim.layers.lookup import check_combiner
from keras_mixed_dim.layers.lookup import rebuild_variables
from keras_mixed_dim.layers.lookup import TableLayer
from keras_mixed_dim.layers.mixed_dim_embedding import PROJECT_FIRST_MAX_ENTRIES
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan


def uniform_plan(input_dim, output_dim):
    """The plan of a plain `input_dim x output_dim` table (one block)."""
    return BlockPlan(int(input_dim), int(output_dim),
                     [Block(0, int(input_dim), int(output_dim))])


class _Group:
    """Blocks of one width (and projection or not) stacked in one table.

    `features[k]` is the feature of the group's `k`-th member, which holds
    that feature's ranks `[start[k], stop[k])` at table rows
    `offset[k] + rank - start[k]`.
    """

    def __init__(self, width, projected, lane):
        self.width, self.projected, self.lane = width, projected, lane
        self.features, self.blocks, self.start, self.stop, self.offset = [], [], [], [], []
        self.rows = 0

    @property
    def name(self):
        lane = f"_l{self.lane}" if self.lane else ""
        return f"stacked_w{self.width}{'p' if self.projected else ''}{lane}"

    def add(self, feature, index, block):
        self.features.append(feature)
        self.blocks.append(index)
        self.start.append(block.start)
        self.stop.append(block.stop)
        self.offset.append(self.rows)
        self.rows += block.rows


def _groups(plans):
    groups = {}
    for f, plan in enumerate(plans):
        seen = {}
        for i, block in enumerate(plan.blocks):
            kind = (block.dim, plan.has_projection(i))
            lane = seen.get(kind, 0)
            seen[kind] = lane + 1
            key = (*kind, lane)
            if key not in groups:
                groups[key] = _Group(*key)
            groups[key].add(f, i, block)
    # widest first: a fixed order keeps variable names and weights stable
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], not k[1], k[2]))]


@saving.register_keras_serializable(package="keras_mixed_dim")
class StackedEmbedding(TableLayer):
    """All categorical features' embeddings in one layer, tables stacked.

    Each feature has a `BlockPlan` (one block of `output_dim` for a uniform
    table, several for a mixed-dimension one, as in `MixedDimEmbedding`).
    Blocks of equal width across all features live in one variable, one
    after another at fixed row offsets (as TorchRec's table-batched
    embeddings and keras-rs's stacked tables do), so a lookup of all
    features does one gather per distinct width instead of one per feature
    and block, and each width's projections run as one batched matmul.

    Example:

    >>> layer = StackedEmbedding([1000, 50], output_dim=8)
    >>> layer(np.array([[3, 49], [999, 0]])).shape
    (2, 2, 8)

    Ids follow the package's id rule per feature: an id outside
    `[0, input_dim_f)` of its feature (negative, too large, NaN, fractional)
    gives an all-zero vector and no gradient; string or boolean ids raise a
    `TypeError`.

    Variables: `stacked_w{w}[p]_embeddings` of shape `(rows, w)` (the `p`
    marks blocks with a projection), `stacked_w{w}p_projections` of shape
    `(members, w, output_dim)`, and, when any plan is remapped, one int32
    `remap` of all features' id -> rank tables end to end, and, when a
    feature counts, `frequency_counts` of the counting features' counts end
    to end (non-trainable, on-read summed). The tables'
    names match `SparseRowOptimizer`'s default rule, so they get sparse row
    updates.

    With `count_frequencies`, the layer counts each counting feature's
    lookups in training (one `frequency_counts` variable, the counting
    features' counts end to end, as `MixedDimEmbedding` counts its own), and
    `FrequencyRecount` re-ranks or re-plans each counting feature exactly as
    it would the feature's own `MixedDimEmbedding` (see
    `keras_mixed_dim.frequency.rerank_stacked` / `replan_stacked`).

    Bags: with `bag_sizes`, feature `f` takes `bag_sizes[f]` padded ids
    (-1, or any invalid id, pads) in consecutive columns of the ids, and
    its vector is the bag's `combiner` over them, weighted by the optional
    `weights` exactly as in the per-feature layers (see
    `keras_mixed_dim.layers.lookup.bag_coefficients`). Every width group
    still does one gather, of all its features' bags at once; a bag is
    reduced before its projection.

    >>> layer = StackedEmbedding([1000, 50], output_dim=8, bag_sizes=[3, 1])
    >>> ids = np.array([[3, 7, -1, 49], [999, -1, -1, 0]])  # bag of 3, then 1
    >>> layer(ids, weights=np.ones((2, 4), "float32")).shape
    (2, 2, 8)

    Per-feature ids: the ids (and `weights`) may also come as one entry per
    feature, a list in feature order or a dict keyed by `feature_names`
    (as keras-rs takes nested features): on TensorFlow each entry a
    `tf.RaggedTensor` / `tf.SparseTensor` of shape `(batch, None)`, padded
    in the graph to the feature's bag size (a longer bag keeps its first
    `bag_sizes[f]` ids, as in the per-feature layers; ragged ones compile
    under XLA), or on any backend a dense `(batch, bag_sizes[f])` array
    (`(batch,)` for a bag of one). A None weights entry weighs that
    feature's ids 1.

    >>> tags = tf.ragged.constant([[3, 7, 9, 11], [5]])  # 4 ids: first 3 kept
    >>> layer([tags, np.array([49, 0])]).shape
    (2, 2, 8)

    Not supported (use a per-feature `MixedDimEmbedding` for it):
    quotient-remainder (`storage="qr"`) blocks.

    Args:
        features: One entry per feature: an integer vocabulary size (a
            uniform table of `output_dim`), or a `BlockPlan` (or its config)
            for a mixed-dimension table.
        output_dim: Integer. The common dimension of every output vector.
        embeddings_initializer: Initializer for the tables.
        projection_initializer: Initializer for the projections.
        embeddings_regularizer: Regularizer for the tables.
        projection_regularizer: Regularizer for the projections.
        mask_zero: Whether id 0 is padding; the mask is `ids != 0`. With
            bags, id 0 is left out of every bag instead, and there is no mask.
        count_frequencies: A bool for every feature, or one bool per
            feature: count the feature's lookups in training (never in
            inference or `predict`), for `FrequencyRecount`. A counting
            feature needs a remapped plan (`remapped=True`). Exact counts
            are int32 and saturate at `2**31 - 1`.
        frequency_half_life: Optional half-life in training steps of every
            count (float32 counts), as in `MixedDimEmbedding`.
        planning_args: Optional per-feature planning settings for
            re-planning, each None or a dict with `num_blocks`, `alpha`,
            `budget_bytes`, `round_dims` (default: the plan's block count,
            `alpha=0.3`, no budget, no rounding, as `MixedDimEmbedding`'s
            defaults).
        feature_names: Optional name per feature, used in `FrequencyRecount`'s
            reports and logs (default `"{layer name}_feature{f}"`);
            `from_layers` takes the per-feature layers' names.
        bag_sizes: Optional ids per feature, a positive int per feature
            (default 1 each: one id per feature).
        combiner: How a feature's bag becomes one vector: `"sum"`
            (default), `"mean"` or `"sqrtn"`. A bag of one valid id without
            weights gives that id's vector under all three.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Integer ids of shape `(..., sum(bag_sizes))`: each feature's
            bag in turn (one id per feature without bags); or per-feature
            ids, a list or a dict keyed by `feature_names` (see above).
        weights: Optional float per-id weights of the ids' shape (of each
            feature's ids for per-feature ids, None entries allowed).
        training: Whether the call is a training step; ids are counted only
            then (each id of a bag once, whatever its weight).

    Returns:
        A tensor of shape `(..., num_features, output_dim)` in the layer's
        compute dtype.
    """

    def __init__(
        self,
        features,
        output_dim,
        embeddings_initializer="uniform",
        projection_initializer="glorot_uniform",
        embeddings_regularizer=None,
        projection_regularizer=None,
        mask_zero=False,
        count_frequencies=False,
        frequency_half_life=None,
        planning_args=None,
        feature_names=None,
        bag_sizes=None,
        combiner="sum",
        **kwargs,
    ):
        if combiner is None or check_combiner(combiner) is None:
            raise ValueError(
                "A StackedEmbedding gives one vector per feature: `combiner` must be "
                f"'sum', 'mean' or 'sqrtn'. Received: {combiner!r}")
        output_dim = check_positive_int("output_dim", output_dim)
        if not isinstance(features, (list, tuple)) or not features:
            raise ValueError(
                "`features` must be a non-empty list of vocabulary sizes or "
                f"BlockPlans. Received: {features!r}")
        super().__init__(**kwargs)
        self.output_dim = int(output_dim)
        plans = []
        for f, feature in enumerate(features):
            if isinstance(feature, dict):
                feature = BlockPlan.from_config(feature)
            if isinstance(feature, BlockPlan):
                if feature.output_dim != self.output_dim:
                    raise ValueError(
                        f"Feature {f}'s plan has output_dim={feature.output_dim}, "
                        f"the layer has output_dim={self.output_dim}.")
                plans.append(feature)
            elif (isinstance(feature, (int, np.integer)) and not isinstance(feature, bool)
                  and feature > 0):
                plans.append(uniform_plan(feature, self.output_dim))
            else:
                raise ValueError(
                    f"Feature {f} must be a positive vocabulary size or a "
                    f"BlockPlan. Received: {feature!r}")
        for f, plan in enumerate(plans):
            if plan.has_qr_blocks:
                raise ValueError(
                    f"Feature {f}'s plan has quotient-remainder (storage='qr') "
                    "blocks, which a stacked table cannot hold; use a "
                    "per-feature MixedDimEmbedding for it.")
        self.counting = _per_feature_flags(count_frequencies, len(plans),
                                           "count_frequencies")
        for f, counts in enumerate(self.counting):
            if counts and not plans[f].remapped:
                raise ValueError(
                    f"Feature {f} has count_frequencies=True, which re-ranks ids and "
                    "needs a plan with an id -> rank table (remapped=True); its "
                    f"plan is {plans[f]}.")
        if frequency_half_life is not None and not (
                any(self.counting) and float(frequency_half_life) > 0):
            raise ValueError(
                "`frequency_half_life` needs a counting feature (count_frequencies) "
                f"and a value > 0. Received: {frequency_half_life!r}")
        self.frequency_half_life = (
            None if frequency_half_life is None else float(frequency_half_life))
        if planning_args is None:
            planning_args = [None] * len(plans)
        if not isinstance(planning_args, (list, tuple)) or len(planning_args) != len(plans):
            raise ValueError(
                f"`planning_args` must be a list of {len(plans)} entries (one per "
                f"feature, None or a dict). Received: {planning_args!r}")
        self.planning_args = tuple(
            _planning_args(plan, args, f, counting) for f, (plan, args, counting)
            in enumerate(zip(plans, planning_args, self.counting)))
        if feature_names is not None:
            if (not isinstance(feature_names, (list, tuple))
                    or len(feature_names) != len(plans)
                    or not all(isinstance(n, str) and n for n in feature_names)
                    or len(set(feature_names)) != len(feature_names)):
                raise ValueError(
                    f"`feature_names` must be {len(plans)} distinct non-empty "
                    f"strings, one per feature. Received: {feature_names!r}")
            feature_names = tuple(feature_names)
        self.feature_names_arg = feature_names
        if bag_sizes is None:
            bag_sizes = [1] * len(plans)
        if not isinstance(bag_sizes, (list, tuple)) or len(bag_sizes) != len(plans):
            raise ValueError(
                f"`bag_sizes` must be a list of {len(plans)} positive integers (one "
                f"per feature). Received: {bag_sizes!r}")
        self.bag_sizes = tuple(check_positive_int(f"bag_sizes[{f}]", k)
                               for f, k in enumerate(bag_sizes))
        self.combiner = combiner
        # column -> feature, and each feature's bag as a 0/1 column matrix
        self._feature_of = np.repeat(np.arange(len(plans)), self.bag_sizes)
        self._bags = np.zeros((self._feature_of.size, len(plans)), dtype="float32")
        self._bags[np.arange(self._feature_of.size), self._feature_of] = 1.0
        self._set_plans(plans)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.projection_initializer = initializers.get(projection_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.projection_regularizer = regularizers.get(projection_regularizer)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero and not self.has_bags
        # per-feature id -> rank tables to start from (set by `from_layers`
        # from unbuilt layers planned with counts), applied at build
        self._initial_ranks = None
        # a `FusedLookup` while `fused_for_serving` is active
        self._fused = None

    def _set_plans(self, plans):
        self.plans = tuple(plans)
        self.input_dims = np.array([p.input_dim for p in plans], dtype="int64")
        if self.input_dims.max() > np.iinfo(np.int32).max:
            raise ValueError("Vocabularies must be below 2**31 ids.")
        # ids are shifted by int32 offsets into stacked tables and remaps
        total = int(self.input_dims.sum())
        if total > np.iinfo(np.int32).max:
            raise ValueError(
                f"The features' vocabularies add up to {total} ids, above "
                f"2**31 - 1 = {np.iinfo(np.int32).max}: StackedEmbedding offsets "
                f"ids by int32 row offsets. Split the features into several "
                f"StackedEmbedding layers. Received vocabulary sizes: "
                f"{self.input_dims.tolist()}")
        self.remapped = any(p.remapped for p in plans)
        self.groups = _groups(plans)

    @property
    def num_features(self):
        return len(self.plans)

    @property
    def has_bags(self):
        """Whether some feature takes more than one id."""
        return self.num_ids > self.num_features

    @property
    def num_ids(self):
        """Columns of the ids: `sum(bag_sizes)`."""
        return int(sum(self.bag_sizes))

    @property
    def feature_names(self):
        """One name per feature (for reports and logs)."""
        if self.feature_names_arg is not None:
            return self.feature_names_arg
        return tuple(f"{self.name}_feature{f}" for f in range(self.num_features))

    @property
    def counting_features(self):
        """Indices of the features that count their lookups."""
        return tuple(int(f) for f in np.flatnonzero(self.counting))

    @property
    def count_frequencies(self):
        """Whether any feature counts its lookups."""
        return any(self.counting)

    def _count_starts(self):
        """Each counting feature's first position in `frequency_counts`."""
        sizes = np.where(self.counting, self.input_dims, 0)
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype("int64")

    def _remap_starts(self):
        return np.concatenate([[0], np.cumsum(self.input_dims)[:-1]]).astype("int64")

    def feature_counts(self, feature):
        """Counting feature `feature`'s counts as float64, `(input_dim_f,)`."""
        feature = self._check_feature(feature)
        if not self.counting[feature]:
            raise ValueError(
                f"Feature {feature} ({self.feature_names[feature]!r}) of layer "
                f"{self.name!r} does not count frequencies: build the layer with "
                "count_frequencies=True for it.")
        start = int(self._count_starts()[feature])
        counts = ops.convert_to_numpy(self.frequency_counts)
        return np.asarray(counts[start:start + int(self.input_dims[feature])],
                          dtype=np.float64)

    def feature_ranks(self, feature):
        """Feature `feature`'s id -> rank table (identity when not remapped)."""
        feature = self._check_feature(feature)
        if self.remap is None:
            return np.arange(int(self.input_dims[feature]), dtype="int32")
        start = int(self._remap_starts()[feature])
        remap = ops.convert_to_numpy(self.remap)
        return np.asarray(remap[start:start + int(self.input_dims[feature])])

    def _check_feature(self, feature):
        if (not isinstance(feature, (int, np.integer)) or isinstance(feature, bool)
                or not 0 <= feature < self.num_features):
            raise ValueError(
                f"`feature` must be an integer in [0, {self.num_features}). "
                f"Received: {feature!r}")
        return int(feature)

    def feature_members(self, feature):
        """Where feature `feature`'s blocks live: per block `(g, k, offset)`,
        the group (index into `tables` / `projections`), the member within
        the group (index into its projections) and the first table row."""
        feature = self._check_feature(feature)
        members = [None] * self.plans[feature].num_blocks
        for g, group in enumerate(self.groups):
            for k, (f, i) in enumerate(zip(group.features, group.blocks)):
                if f == feature:
                    members[i] = (g, k, group.offset[k])
        return members

    def add_table(self, group):
        """Creates the stacked table of `group` (a subclass may store it
        otherwise; lookups read it through `read_rows`)."""
        return flag_table(self.add_weight(
            shape=(group.rows, group.width),
            initializer=self.embeddings_initializer,
            regularizer=self.embeddings_regularizer,
            name=f"{group.name}_embeddings"))

    def build(self, input_shape=None):
        if self.built:
            return
        self.tables, self.projections = [], []
        for group in self.groups:
            self.tables.append(self.add_table(group))
            projection = None
            if group.projected:
                projection = self.add_weight(
                    shape=(len(group.features), group.width, self.output_dim),
                    initializer=_PerMember(self.projection_initializer),
                    regularizer=self.projection_regularizer,
                    name=f"{group.name}_projections")
            self.projections.append(projection)
        self.remap = None
        if self.remapped:
            self.remap = self.add_weight(
                shape=(int(self.input_dims.sum()),),
                initializer=_StackedIdentityRanks(self.input_dims),
                dtype="int32", trainable=False, name="remap")
            if self._initial_ranks is not None:
                self.remap.assign(np.concatenate([
                    np.arange(plan.input_dim) if ranks is None else np.asarray(ranks)
                    for plan, ranks in zip(self.plans, self._initial_ranks)
                ]).astype("int32"))
        self._initial_ranks = None
        self.frequency_counts = None
        if self.count_frequencies:
            # on-read, summed: as MixedDimEmbedding's counts, each replica of
            # a tf.distribute strategy adds its own lookups to its own copy
            size = int(np.sum(np.where(self.counting, self.input_dims, 0)))
            self.frequency_counts = keras.Variable(
                initializer="zeros", shape=(size,),
                dtype="float32" if self.frequency_half_life else "int32",
                trainable=False, aggregation="sum", synchronization="on_read",
                name="frequency_counts")
        self.built = True

    def __call__(self, inputs, *args, **kwargs):
        per_feature = _is_per_feature(inputs)
        if per_feature and not _has_keras_tensor(inputs):
            inputs, weights = self._joined_features(inputs, kwargs.get("weights"))
            kwargs = dict(kwargs, weights=weights)
            per_feature = False
        if not per_feature and is_host_array(inputs):
            self._check_num_features(np.shape(inputs))
            array = sanitize_numpy_ids(inputs, int(self.input_dims.max()), self.name)
            inputs = np.where(array < self._column_dims(), array, -1)
        weights = kwargs.get("weights")
        if weights is not None and not per_feature and is_host_array(weights):
            kwargs = dict(kwargs, weights=np.asarray(weights, dtype="float32"))
        return super().__call__(inputs, *args, **kwargs)

    def _column_dims(self):
        """Vocabulary size of each id column's feature, int32."""
        return self.input_dims[self._feature_of].astype("int32")

    def _check_num_features(self, shape):
        if not shape or shape[-1] != self.num_ids:
            bags = (f" in bags of {list(self.bag_sizes)} ids" if self.has_bags
                    else "")
            raise ValueError(
                f"Layer {self.name!r} has {self.num_features} features{bags}; its "
                f"ids need a last axis of {self.num_ids}. Received shape "
                f"{tuple(shape)}.")

    def _joined_features(self, inputs, weights):
        """Per-feature ids (and weights), a list or a dict keyed by
        `feature_names`, as the padded `(batch, sum(bag_sizes))` ids and
        weights: ragged / sparse entries padded to their feature's bag size
        (`padded_bags`: a bag keeps its first `bag_sizes[f]` ids), dense ones
        `(batch, bag_sizes[f])` (or `(batch,)` for a bag of one) as they are.
        A feature without weights (a None entry) weighs its ids 1."""
        ids = self._feature_entries(inputs, "ids")
        if weights is None:
            weights = [None] * self.num_features
        elif _is_per_feature(weights) or isinstance(weights, dict):
            weights = self._feature_entries(weights, "weights")
        else:
            raise ValueError(
                f"Layer {self.name!r} got its ids per feature, so `weights` must "
                "be per feature too (a list, or a dict keyed by feature name, None "
                f"for a feature without weights). Received {type(weights).__name__}.")
        padded_ids, padded_weights = [], []
        for f, (name, size, x, w) in enumerate(zip(
                self.feature_names, self.bag_sizes, ids, weights)):
            if x is None:
                raise ValueError(f"Layer {self.name!r}: feature {name!r} has no ids.")
            if is_ragged_or_sparse(x) or is_ragged_or_sparse(w):
                x, w = padded_bags(x, w, size, f"{self.name}/{name}")
            else:
                x = self._dense_feature(x, size, name, "ids")
                if w is not None:
                    w = self._dense_feature(w, size, name, "weights")
            padded_ids.append(x)
            padded_weights.append(w)
        if all(w is None for w in padded_weights):
            joined_weights = None
        else:
            # ones weigh a bag exactly as no weights do (see bag_coefficients)
            joined_weights = _concatenate([
                ops.ones(ops.shape(x), dtype="float32") if w is None else w
                for x, w in zip(padded_ids, padded_weights)], "float32")
        return _concatenate(padded_ids), joined_weights

    def _feature_entries(self, structure, what):
        if isinstance(structure, dict):
            if set(structure) != set(self.feature_names):
                raise ValueError(
                    f"Layer {self.name!r} takes its per-feature {what} keyed by its "
                    f"feature names {list(self.feature_names)}. Received keys "
                    f"{list(structure)}.")
            return [structure[name] for name in self.feature_names]
        if len(structure) != self.num_features:
            raise ValueError(
                f"Layer {self.name!r} has {self.num_features} features; its "
                f"per-feature {what} need {self.num_features} entries. Received "
                f"{len(structure)}.")
        return list(structure)

    def _dense_feature(self, x, size, name, what):
        shape = tuple(np.shape(x) if is_host_array(x) else x.shape)
        if size == 1 and len(shape) == 1:
            return (np.asarray(x)[:, None] if is_host_array(x)
                    else ops.expand_dims(x, -1))
        if len(shape) != 2 or shape[-1] != size:
            raise ValueError(
                f"Layer {self.name!r}: feature {name!r} takes a bag of {size} "
                f"padded {what} per example, `(batch, {size})`"
                + (" or `(batch,)`" if size == 1 else "")
                + f", or a tf.RaggedTensor / tf.SparseTensor. Received shape {shape}.")
        return x

    def call(self, inputs, weights=None, training=None):
        if training and self._fused is not None:
            raise ValueError(
                f"Layer {self.name!r} is fused for serving (`fused_for_serving`): "
                "its fused copy of the tables is not trained. Train outside that "
                "context.")
        if _is_per_feature(inputs):
            inputs, weights = self._joined_features(inputs, weights)
        self._check_num_features(inputs.shape)
        if weights is not None:
            weights = ops.cast(weights, "float32")
            if tuple(weights.shape[-1:]) != (self.num_ids,) or (
                    len(weights.shape) != len(inputs.shape)):
                raise ValueError(
                    f"Layer {self.name!r}: `weights` must have the shape of the ids "
                    f"{tuple(inputs.shape)}. Received {tuple(weights.shape)}.")
        ids, valid = valid_int_ids(inputs, int(self.input_dims.max()), self.name)
        ids = ops.cast(ids, "int32")
        valid = ops.logical_and(valid, ops.less(ids, self._column_dims()))
        if training and self.frequency_counts is not None:
            self._count(ids, valid)
        if self.mask_zero and self.has_bags:
            # in a bag, id 0 is padding (as in the per-feature layers)
            valid = ops.logical_and(valid, ops.not_equal(ids, 0))
        ranks = ops.where(valid, ids, -1)
        if self.remap is not None:
            starts = ops.convert_to_tensor(
                self._remap_starts()[self._feature_of].astype("int32"))
            positions = ops.where(valid, ops.add(ids, starts), 0)
            ranks = ops.where(valid, ops.take(self.remap, positions, axis=0), -1)
        if (training and weights is None and len(ranks.shape) == 2
                and self._trains_by_groups()):
            outputs = self._train_whole_tables(ranks)
        else:
            outputs = self.lookup_ranks(ranks, weights)
        return ops.cast(outputs, self.compute_dtype)

    def _count(self, ids, valid):
        """Adds the counting features' lookups to `frequency_counts`: each id
        of a bag once."""
        columns = np.flatnonzero(np.asarray(self.counting)[self._feature_of])
        if columns.size < self.num_ids:
            ids = ops.take(ids, columns, axis=-1)
            valid = ops.take(valid, columns, axis=-1)
        if self.mask_zero:
            valid = ops.logical_and(valid, ops.not_equal(ids, 0))
        starts = ops.convert_to_tensor(
            self._count_starts()[self._feature_of[columns]].astype("int32"))
        positions = ops.where(valid, ops.add(ids, starts), 0)
        add_lookup_counts(self.frequency_counts, ops.reshape(positions, (-1,)),
                          ops.reshape(valid, (-1,)), self.frequency_half_life)

    def lookup_ranks(self, ranks, weights=None):
        """Vectors of per-feature ranks `(..., sum(bag_sizes))` (-1 gives
        zeros), each feature's bag combined: `(..., F, output_dim)` float32."""
        if self._fused is not None and not self.has_bags:
            vectors = self._fused(ranks)
            if weights is not None:
                # one id per feature: its factor scales the projected vector
                # as it would the row (a projection is linear)
                coefficients = bag_coefficients(ops.greater_equal(ranks, 0), weights,
                                                self.combiner, bags=self._bags)
                vectors = ops.multiply(vectors, ops.expand_dims(coefficients, -1))
            return vectors
        coefficients = None
        if self.has_bags or weights is not None:
            coefficients = bag_coefficients(ops.greater_equal(ranks, 0), weights,
                                            self.combiner, bags=self._bags)
        elif all(plan.num_blocks == 1 for plan in self.plans):
            return self._lookup_whole_tables(ranks)
        vectors = [None] * self.num_features
        for index, (group, projection) in enumerate(zip(self.groups, self.projections)):
            features = np.asarray(group.features)
            # the group's id columns, member by member, each member's bag in
            # turn; `sizes[k]` columns belong to member k
            sizes = np.asarray(self.bag_sizes)[features]
            columns = np.concatenate([np.flatnonzero(self._feature_of == f)
                                      for f in features])
            every_column = np.array_equal(columns, np.arange(self.num_ids))
            member_ranks = ranks if every_column else take_columns(ranks, columns)
            start = np.repeat(np.asarray(group.start, dtype="int32"), sizes)
            stop = np.repeat(np.asarray(group.stop, dtype="int32"), sizes)
            # Ranks are in [-1, input_dim): a bound that every member's block
            # meets anyway is skipped (one op less per group and request; the
            # per-table MD plan's blocks span whole tables).
            member = ops.greater_equal(member_ranks, np.maximum(start, 0))
            if np.any(stop < self.input_dims[self._feature_of[columns]]):
                member = ops.logical_and(member, ops.less(member_ranks, stop))
            # tensors, not numpy arrays: `tensor - ndarray` would go through
            # numpy on PyTorch
            shift = ops.convert_to_tensor(
                np.repeat(np.asarray(group.offset, dtype="int32"), sizes) - start)
            rows = ops.where(member, ops.add(member_ranks, shift), 0)
            values = self.read_rows(index, rows)
            values = ops.where(ops.expand_dims(member, -1), values, 0.0)
            if self.has_bags or coefficients is not None:
                member_coefficients = coefficients
                if coefficients is not None and not every_column:
                    member_coefficients = take_columns(coefficients, columns)
                values = _reduce_bags(values, member_coefficients, sizes)
            if (len(self.groups) == 1 and projection is None
                    and np.array_equal(features, np.arange(self.num_features))):
                return values
            # One vector per member, then a plain matmul per projected one:
            # on a CPU under TensorFlow a step ran in a third of the time of
            # one batched einsum per group and a 0/1 placement einsum.
            members = ops.unstack(values, num=len(features), axis=-2)
            if projection is not None:
                members = [ops.matmul(v, p) for v, p in zip(
                    members, ops.unstack(ops.convert_to_tensor(projection),
                                         num=len(features), axis=0))]
            for f, v in zip(features, members):
                # a feature's blocks are disjoint in rank: the other blocks'
                # vectors are exact zeros
                vectors[f] = v if vectors[f] is None else ops.add(vectors[f], v)
        return ops.stack(vectors, axis=-2)

    def _lookup_whole_tables(self, ranks):
        """`lookup_ranks` when every feature is one block (uniform or per-table
        MD) and one id: a rank is then its block's either way, so the rows,
        the member test and the zeroing of invalid ids are done once for all
        groups, and the groups' columns come from one gather and one split.
        A serving request at batch 1 runs about half the ops of the general
        path. Zeroing after the projections gives the same values and
        gradients: a projection of a zero vector is zero."""
        valid = ops.greater_equal(ranks, 0)
        offsets = np.zeros(self.num_features, dtype="int32")
        for group in self.groups:
            offsets[np.asarray(group.features)] = group.offset
        rows = ops.where(valid, ops.add(ranks, ops.convert_to_tensor(offsets)), 0)
        order = np.concatenate([group.features for group in self.groups])
        if not np.array_equal(order, np.arange(self.num_features)):
            rows = take_columns(rows, order)
        sizes = [len(group.features) for group in self.groups]
        chunks = split_columns(rows, sizes) if len(sizes) > 1 else [rows]
        parts = []
        for index, (group, projection) in enumerate(zip(self.groups, self.projections)):
            values = self.read_rows(index, chunks[index])
            if len(self.groups) == 1 and projection is None:
                # one uniform stack (the order is the features' own)
                return ops.where(ops.expand_dims(valid, -1), values, 0.0)
            # members first: each projected group is then one batched matmul
            values = ops.moveaxis(values, -2, 0)
            if projection is not None:
                values = ops.matmul(values, ops.convert_to_tensor(projection))
            parts.append(values)
        # back to the features' order, then members last but one
        vectors = take_columns(ops.concatenate(parts, axis=0), np.argsort(order), axis=0)
        vectors = ops.moveaxis(vectors, 0, -2)
        return ops.where(ops.expand_dims(valid, -1), vectors, 0.0)

    @property
    def fusable(self):
        """Whether `fused_for_serving` applies: a built layer of one id per
        feature whose tables this class stores as float32, and which has more
        than one gather or a projection to fuse (a single uniform stack is one
        gather already)."""
        return (self.built and not self.has_bags
                and type(self).read_rows is StackedEmbedding.read_rows
                and type(self).add_table is StackedEmbedding.add_table
                and (len(self.groups) > 1 or self.projections[0] is not None))

    @contextlib.contextmanager
    def fused_for_serving(self, projection="auto"):
        """Inference calls in this context look up through a `FusedLookup`.

        Made for exports (`keras_mixed_dim.export.export_for_serving` enters
        it): a traced inference call then runs one gather and one batched
        matmul for every feature instead of one gather per width group and
        one matmul per projected group; the trace captures the fused
        variables instead of the stacked ones. The fused copy is taken from
        the weights on entry (the host holds the tables twice meanwhile), so
        the layer must not train inside the context: a training call raises.

        Args:
            projection: `"batched"` (one batched matmul of `(F, slots,
                output_dim)` projections), `"block_diagonal"` (one plain
                matmul with every projection in one block-diagonal matrix:
                a lower fixed cost per request, more bytes and arithmetic,
                refused above a byte cap) or `"auto"` (block-diagonal within
                the cap, else batched); see `FusedLookup`.

        Returns:
            A context manager yielding the `FusedLookup` (for its `bytes`).

        Example:

        >>> layer = StackedEmbedding([plan_a, plan_b], output_dim=8)  # doctest: +SKIP
        >>> with layer.fused_for_serving() as fused:           # doctest: +SKIP
        ...     vectors = layer(ids)       # the same vectors as outside
        """
        if not self.fusable:
            raise ValueError(
                f"Layer {self.name!r} cannot be fused for serving: it must be a "
                "built StackedEmbedding (float32 tables, not a subclass storing "
                "them otherwise) of one id per feature with more than one width "
                f"group or a projection (built={self.built}, bag_sizes="
                f"{list(self.bag_sizes)}, groups={len(self.groups) if self.built else '?'}).")
        if self._fused is not None:
            raise ValueError(f"Layer {self.name!r} is already fused for serving.")
        self._fused = FusedLookup(self, projection)
        try:
            yield self._fused
        finally:
            self._fused = None

    def _trains_by_groups(self):
        """Whether a training step of `(batch, F)` ids looks up through
        `_train_whole_tables`: whole-table plans (uniform, per-table MD) of
        one id per feature in tables of this class's own storage, other than
        one plain stack (which is one gather already)."""
        return (not self.has_bags
                and all(plan.num_blocks == 1 for plan in self.plans)
                and type(self).read_rows is StackedEmbedding.read_rows
                and not (len(self.groups) == 1 and self.projections[0] is None))

    def _train_whole_tables(self, ranks):
        """`_lookup_whole_tables` for a training step, in fewer copies of the
        `(batch, F, d)` vectors (TensorFlow ran the per-table MD DLRM's
        lookup in about two thirds of the time, JAX in half).

        Groups whose members are all small (as `MixedDimEmbedding` projects
        its small blocks first) are projected whole, every member by its own
        projection, into one head table ending in a zero row; one gather of
        it gives their features' vectors, an invalid id reading the zero
        row. The other groups gather their rows, zero the invalid ones
        before projecting (`w` floats per id instead of `d`) and project
        each member without moving the members' axis. The blocks come out
        head features first, then group after group: one gather puts them
        in the features' order, and its gradient is the inverse gather (a
        gather's own gradient would be a scatter-add, slow on a CPU).

        A serving request would pay for the head table's projections at
        every call, so inference keeps `_lookup_whole_tables`; both give the
        same vectors up to float rounding (a projection is linear).
        """
        head = [g for g, group in enumerate(self.groups)
                if all(int(self.input_dims[f]) * group.width <= PROJECT_FIRST_MAX_ENTRIES
                       for f in group.features)]
        blocks, order = [], []
        if head:
            pieces, features = [], []
            for g in head:
                group, projection = self.groups[g], self.projections[g]
                table = ops.convert_to_tensor(self.tables[g])
                sizes = [stop - start for start, stop in zip(group.start, group.stop)]
                parts = ([table] if len(sizes) == 1 else ops.split(
                    table, [int(i) for i in np.cumsum(sizes)[:-1]], axis=0))
                if projection is not None:
                    projection = ops.convert_to_tensor(projection)
                    parts = [ops.matmul(part, projection[k]) for k, part in enumerate(parts)]
                pieces.extend(parts)
                features.extend(group.features)
            # the head features in their own order, then one zero row
            by_feature = np.argsort(features, kind="stable")
            features = np.asarray(features)[by_feature]
            pieces = [pieces[k] for k in by_feature]
            sizes = self.input_dims[features].astype("int32")
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype("int32")
            zero_row = int(sizes.sum())
            pieces.append(ops.zeros((1, self.output_dim), dtype="float32"))
            table = dense_gradient(ops.concatenate(pieces, axis=0))
            head_ranks = (ranks if len(features) == self.num_features
                          else take_columns(ranks, features))
            rows = ops.where(ops.greater_equal(head_ranks, 0),
                             ops.add(head_ranks, ops.convert_to_tensor(starts)), zero_row)
            blocks.append(ops.take(table, rows, axis=0))
            order.extend(features)
        for g, (group, projection) in enumerate(zip(self.groups, self.projections)):
            if g in head:
                continue
            features = np.asarray(group.features)
            member_ranks = (ranks if len(features) == self.num_features
                            else take_columns(ranks, features))
            valid = ops.greater_equal(member_ranks, 0)
            rows = ops.where(valid, ops.add(
                member_ranks, ops.convert_to_tensor(np.asarray(group.offset, "int32"))), 0)
            values = ops.where(ops.expand_dims(valid, -1), self.read_rows(g, rows), 0.0)
            if projection is not None:
                values = _project_members(values, ops.convert_to_tensor(projection))
            blocks.append(values)
            order.extend(features)
        vectors = blocks[0] if len(blocks) == 1 else ops.concatenate(blocks, axis=-2)
        order = np.asarray(order)
        if np.array_equal(order, np.arange(self.num_features)):
            return vectors
        return _permuted(vectors, np.argsort(order), axis=-2)

    def read_rows(self, group_index, rows):
        """float32 rows `rows` of group `group_index`'s stacked table (the one
        place a lookup reads a table, so a subclass can store it otherwise)."""
        return take_rows(self.tables[group_index], rows)

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero or self.has_bags:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = list(input_shape.values())
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
                input_shape[0], (list, tuple)):
            # per-feature ids: (batch, ...) each
            return (input_shape[0][0], self.num_features, self.output_dim)
        return (*tuple(input_shape)[:-1], self.num_features, self.output_dim)

    def feature_weights(self, feature):
        """Feature `feature`'s block tables and projections (None when a block
        has none), read out of the stacked variables as numpy arrays, in the
        order of `MixedDimEmbedding.block_embeddings` / `block_projections`."""
        arrays = self.numpy_weights()
        return self.feature_arrays(feature, arrays["tables"], arrays["projections"])

    def numpy_weights(self):
        """Copies of the variables: `{"tables", "projections", "remap"}` (lists
        in the order of `tables` / `projections`; remap None when absent)."""
        return {
            "tables": [np.array(ops.convert_to_numpy(t)) for t in self.tables],
            "projections": [None if p is None else np.array(ops.convert_to_numpy(p))
                            for p in self.projections],
            "remap": None if self.remap is None else np.array(
                ops.convert_to_numpy(self.remap)),
        }

    def feature_arrays(self, feature, tables, projections):
        """Feature `feature`'s block tables and projections as views of the
        stacked arrays `tables` / `projections` (see `numpy_weights`)."""
        plan = self.plans[feature]
        block_tables, block_projections = [], []
        for i, (g, k, offset) in enumerate(self.feature_members(feature)):
            block_tables.append(tables[g][offset:offset + plan.blocks[i].rows])
            block_projections.append(
                None if projections[g] is None else projections[g][k])
        return block_tables, block_projections

    def set_from_layers(self, per_feature_layers):
        """Copies the weights of built per-feature layers into this layer.

        Counting features also take the layers' `frequency_counts`.

        Args:
            per_feature_layers: One built `keras.layers.Embedding` or
                `MixedDimEmbedding` per feature, with the same plan (or
                vocabulary size) as this layer's feature.
        """
        if len(per_feature_layers) != self.num_features:
            raise ValueError(
                f"Expected {self.num_features} layers, got {len(per_feature_layers)}.")
        if not self.built:
            self.build()
        per_feature = []
        for layer, plan in zip(per_feature_layers, self.plans):
            tables, projections = _layer_weights(layer, plan)
            remap = getattr(layer, "remap", None)
            per_feature.append((tables, projections, None if remap is None
                                else ops.convert_to_numpy(remap)))
        self.set_feature_arrays(per_feature)
        if self.frequency_counts is not None:
            counts = np.array(ops.convert_to_numpy(self.frequency_counts))
            starts = self._count_starts()
            for f in self.counting_features:
                layer_counts = getattr(per_feature_layers[f], "frequency_counts", None)
                if layer_counts is not None:
                    counts[starts[f]:starts[f] + self.input_dims[f]] = (
                        ops.convert_to_numpy(layer_counts))
            self.frequency_counts.assign(counts.astype(self.frequency_counts.dtype))

    def set_feature_arrays(self, per_feature):
        """Writes every feature's weights: `per_feature[f]` is `(tables,
        projections, ranks)` in `feature_weights`' order, `ranks` the
        id -> rank table (None: identity)."""
        if len(per_feature) != self.num_features:
            raise ValueError(
                f"Expected weights of {self.num_features} features, got {len(per_feature)}.")
        arrays = self.numpy_weights()
        for f, (tables, projections, _) in enumerate(per_feature):
            plan = self.plans[f]
            if len(tables) != plan.num_blocks:
                raise ValueError(
                    f"Feature {f} has {plan.num_blocks} blocks; got {len(tables)} tables.")
            for i, (g, k, offset) in enumerate(self.feature_members(f)):
                rows = plan.blocks[i].rows
                arrays["tables"][g][offset:offset + rows] = tables[i]
                if arrays["projections"][g] is not None:
                    arrays["projections"][g][k] = projections[i]
        for table, value in zip(self.tables, arrays["tables"]):
            table.assign(value)
        for projection, value in zip(self.projections, arrays["projections"]):
            if projection is not None:
                projection.assign(value)
        if self.remap is not None:
            self.remap.assign(np.concatenate([
                np.arange(plan.input_dim) if ranks is None else np.asarray(ranks)
                for plan, (_, _, ranks) in zip(self.plans, per_feature)
            ]).astype("int32"))

    def rebuild(self, plans, per_feature):
        """Replaces the variables with fresh ones for new per-feature plans.

        Used by re-planning (`keras_mixed_dim.frequency.replan_stacked`):
        every feature keeps its vocabulary and the layer its `output_dim`;
        the stacked tables and projections are created anew for `plans`, then
        filled with `per_feature` (see `set_feature_arrays`);
        `frequency_counts` keeps its values. The model holding the layer must
        be recompiled, since its variables changed.
        """
        if not self.built:
            raise ValueError("Only a built layer can be rebuilt.")
        plans = list(plans)
        if len(plans) != self.num_features:
            raise ValueError(f"Expected {self.num_features} plans, got {len(plans)}.")
        for f, (old, new) in enumerate(zip(self.plans, plans)):
            if (new.input_dim, new.output_dim) != (old.input_dim, old.output_dim):
                raise ValueError(
                    f"Feature {f}'s new plan is for {new.input_dim} ids -> dim "
                    f"{new.output_dim}; the feature has {old.input_dim} -> "
                    f"{old.output_dim}.")
            if new.has_qr_blocks or (self.counting[f] and not new.remapped):
                raise ValueError(
                    f"Feature {f}'s new plan must be remapped and without QR blocks: {new}.")
        counts = None
        if self.frequency_counts is not None:
            counts = ops.convert_to_numpy(self.frequency_counts)
        rebuild_variables(self, lambda: self._set_plans(plans))
        self.set_feature_arrays(per_feature)
        if counts is not None:
            self.frequency_counts.assign(counts)

    @classmethod
    def from_layers(cls, per_feature_layers, **kwargs):
        """A stacked layer with the plans and (if built) weights of per-feature
        `keras.layers.Embedding` / `MixedDimEmbedding` layers."""
        plans = []
        for layer in per_feature_layers:
            plan = getattr(layer, "plan", None)
            plans.append(plan if plan is not None else uniform_plan(
                layer.input_dim, layer.output_dim))
        output_dims = {p.output_dim for p in plans}
        if len(output_dims) != 1:
            raise ValueError(f"The layers' output dims differ: {sorted(output_dims)}.")
        if "count_frequencies" not in kwargs:
            counting = [bool(getattr(layer, "count_frequencies", False))
                        for layer in per_feature_layers]
            kwargs["count_frequencies"] = counting if any(counting) else False
            half_lives = {layer.frequency_half_life for layer, c
                          in zip(per_feature_layers, counting) if c}
            if len(half_lives) > 1:
                raise ValueError(
                    "The counting layers' frequency_half_life values differ "
                    f"({sorted(half_lives, key=str)}); a stacked layer has one.")
            if half_lives and "frequency_half_life" not in kwargs:
                kwargs["frequency_half_life"] = half_lives.pop()
        for key in ("embeddings_initializer", "projection_initializer"):
            found = [initializers.serialize(getattr(layer, key)) for layer in
                     per_feature_layers if getattr(layer, key, None) is not None]
            if key not in kwargs and found and all(f == found[0] for f in found):
                # unbuilt layers start as they would have on their own
                kwargs[key] = initializers.deserialize(found[0])
        kwargs.setdefault("planning_args", [
            getattr(layer, "planning_args", None) for layer in per_feature_layers])
        names = [layer.name for layer in per_feature_layers]
        kwargs.setdefault("feature_names", names if len(set(names)) == len(names) else None)
        stacked = cls(plans, output_dims.pop(), **kwargs)
        if all(layer.built for layer in per_feature_layers):
            stacked.set_from_layers(per_feature_layers)
        else:
            # a MixedDimEmbedding planned from counts ranks its ids when it
            # builds: start the stacked remap from the same ranks
            ranks = [getattr(layer, "_initial_ranks", None) for layer in per_feature_layers]
            if any(r is not None for r in ranks):
                stacked._initial_ranks = ranks
        return stacked

    def _plans_bytes(self):
        """Bytes of the plans' arrays: float32 tables and projections,
        int32 remap (frequency counts not included)."""
        total = sum(g.rows * g.width for g in self.groups)
        total += sum(len(g.features) * g.width * self.output_dim
                     for g in self.groups if g.projected)
        return FLOAT_BYTES * total + (
            REMAP_BYTES * int(self.input_dims.sum()) if self.remapped else 0)

    @property
    def bytes(self):
        """Bytes of everything the layer holds: the tables, projections and
        remap of every feature and the counting features' frequency counts.
        Known before the layer is built."""
        counted = int(np.sum(np.where(self.counting, self.input_dims, 0)))
        return int(self._plans_bytes() + COUNT_BYTES * counted)

    def get_config(self):
        config = super().get_config()
        config.update({
            "features": [p.get_config() for p in self.plans],
            "output_dim": self.output_dim,
            "embeddings_initializer": initializers.serialize(self.embeddings_initializer),
            "projection_initializer": initializers.serialize(self.projection_initializer),
            "embeddings_regularizer": regularizers.serialize(self.embeddings_regularizer),
            "projection_regularizer": regularizers.serialize(self.projection_regularizer),
            "mask_zero": self.mask_zero,
            "count_frequencies": list(self.counting),
            "frequency_half_life": self.frequency_half_life,
            "planning_args": [dict(args) for args in self.planning_args],
            "feature_names": (None if self.feature_names_arg is None
                              else list(self.feature_names_arg)),
            "bag_sizes": list(self.bag_sizes),
            "combiner": self.combiner,
        })
        return config


class FusedLookup:
    """A `StackedEmbedding`'s lookup as one gather and one batched matmul.

    The serving form of the layer (see `StackedEmbedding.fused_for_serving`):
    every block of every feature is copied into one flat float32 variable,
    row after row, behind one zero row of its own, and each feature's block
    projections into one `(slots, output_dim)` matrix, the blocks' widths
    one after another and zero rows up to `slots`, the widest feature's sum
    of block widths (an identity for a block without projection). A request
    then runs one gather of `(..., F, slots)` scalars and one batched matmul
    whatever the number of width groups, and invalid ids need no mask: rank
    -1 reads the zero row in front of its feature's rows.

    When every feature has one block (per-table MD, `dlrm`'s `"table"`), a
    slot past its feature's width reads its row's last scalar again, which
    the projection's zero rows cancel, so the positions cost one multiply on
    `(..., F)` and one add; with several blocks, a slot outside the rank's
    block reads a zero (a compare and a select per slot). A row holding an
    inf therefore serves NaN where the grouped lookup may serve inf; other
    ids never read it.

    Bytes: the flat table holds the stacked tables plus one zero row per
    block; the projections grow from the projected blocks' `w x d` each to
    `F x slots x d` (zero padding and identities); `added_bytes` is the
    difference, reported by `export_for_serving`.

    With `projection="block_diagonal"`, the features' slots are their
    blocks' widths end to end (`T` in all, no padding) and every projection
    sits in one `(T, F * output_dim)` block-diagonal matrix: a request then
    runs one plain matmul, whose fixed cost at batch 1 is below a batched
    one's (oneDNN's batched matmul), but with `F` times the arithmetic of
    the batched projections and `4 * T * F * output_dim` bytes, so it is
    refused above `BLOCK_DIAGONAL_MAX_SHARE` of the tables' bytes or 1 MiB,
    whichever is larger. `"auto"` (the default) takes the block-diagonal
    projection within that cap and the batched one above it.

    Args:
        layer: A built `StackedEmbedding` whose `fusable` is True; its
            weights are copied when this is made.
        projection: `"auto"`, `"batched"` or `"block_diagonal"`.
    """

    #: Largest block-diagonal projection, as a share of the stacked tables' bytes.
    BLOCK_DIAGONAL_MAX_SHARE = 0.125

    def __init__(self, layer, projection="auto"):
        if projection not in ("auto", "batched", "block_diagonal"):
            raise ValueError(
                "`projection` must be 'auto', 'batched' or 'block_diagonal'. "
                f"Received: {projection!r}")
        plans, output_dim = layer.plans, layer.output_dim
        used = [sum(block.dim for block in plan.blocks) for plan in plans]
        diagonal_bytes = 4 * sum(used) * len(plans) * output_dim
        limit = max(self.BLOCK_DIAGONAL_MAX_SHARE * 4 * sum(
            int(np.prod(t.shape)) for t in layer.tables), 2**20)
        if projection == "block_diagonal" and diagonal_bytes > limit:
            raise ValueError(
                f"Layer {layer.name!r}: a block-diagonal projection of "
                f"({sum(used)}, {len(plans) * output_dim}) takes {diagonal_bytes:,} "
                f"bytes, above {self.BLOCK_DIAGONAL_MAX_SHARE} of its tables' bytes "
                f"and 1 MiB ({int(limit):,}); use projection='batched'.")
        if projection == "auto":
            projection = "block_diagonal" if diagonal_bytes <= limit else "batched"
        self.projection = projection
        self.slots = max(sum(block.dim for block in plan.blocks) for plan in plans)
        self.single_block = all(plan.num_blocks == 1 for plan in plans)
        tables = [ops.convert_to_numpy(table) for table in layer.tables]
        arrays = [None if p is None else ops.convert_to_numpy(p) for p in layer.projections]
        members = [layer.feature_members(f) for f in range(layer.num_features)]
        # each block's zero row and rows, block after block
        sizes = [(block.rows + 1) * block.dim for plan in plans for block in plan.blocks]
        flat = np.zeros(sum(sizes), dtype="float32")
        shape = (layer.num_features, self.slots)
        # with several blocks, rank r of slot s reads flat[r * scale[s] +
        # base[s]] when start[s] <= r < stop[s], else flat[0] (a zero row);
        # padding slots never match (start = stop)
        scale = np.zeros(shape, dtype="int64")
        base = np.zeros(shape, dtype="int64")
        start, stop = np.zeros(shape, dtype="int64"), np.zeros(shape, dtype="int64")
        projections = np.zeros((*shape, output_dim), dtype="float32")
        position = 0
        for f, plan in enumerate(plans):
            slot = 0
            for block, (g, k, offset) in zip(plan.blocks, members[f]):
                width = block.dim
                rows = tables[g][offset:offset + block.rows]
                flat[position + width:position + width * (block.rows + 1)] = rows.reshape(-1)
                columns = slice(slot, slot + width)
                scale[f, columns] = width
                # rank r's row follows the zero row: (1 + r - start) rows in
                base[f, columns] = position + (1 - block.start) * width + np.arange(width)
                start[f, columns], stop[f, columns] = block.start, block.stop
                projections[f, columns] = (np.eye(width, output_dim, dtype="float32")
                                           if arrays[g] is None else arrays[g][k])
                position += width * (block.rows + 1)
                slot += width
            if self.single_block:
                # past the width: the row's last scalar (its projection rows are 0)
                base[f, slot:] = base[f, slot - 1]
        self.widths = scale[:, 0].copy()
        # int32 indices while every position and every product fits
        largest = flat.size + int(layer.input_dims.max()) * int(scale.max())
        self.index_dtype = "int32" if largest < np.iinfo(np.int32).max else "int64"
        self.table = keras.Variable(flat, trainable=False, name="fused_table")
        self.scale, self.base = scale.astype(self.index_dtype), base.astype(self.index_dtype)
        self.start, self.stop = start.astype(self.index_dtype), stop.astype(self.index_dtype)
        self.widths = self.widths.astype(self.index_dtype)
        stacked = 4 * (sum(t.size for t in tables) + sum(p.size for p in arrays if p is not None))
        if projection == "block_diagonal":
            # the real slots only, feature after feature
            slot_of = np.concatenate([f * self.slots + np.arange(n)
                                      for f, n in enumerate(used)])
            diagonal = np.zeros((slot_of.size, len(plans) * output_dim), dtype="float32")
            rows = np.repeat(np.arange(len(plans)), used)
            for f in range(len(plans)):
                diagonal[rows == f, f * output_dim:(f + 1) * output_dim] = (
                    projections[f, :used[f]])
            self.slot_feature = rows.astype("int32")
            for name in ("scale", "base", "start", "stop"):
                setattr(self, name, getattr(self, name).reshape(-1)[slot_of])
            projections = diagonal
        self.projections = keras.Variable(projections, trainable=False,
                                          name="fused_projections")
        self.bytes = 4 * (flat.size + projections.size)
        self.added_bytes = self.bytes - stacked

    def __call__(self, ranks):
        """`(..., F, output_dim)` float32 vectors of ranks `(..., F)` in
        `[-1, input_dim_f)` (-1: zeros)."""
        num_features = self.widths.shape[0]
        if self.projection == "block_diagonal":
            return self._block_diagonal(ranks, num_features)
        flat_batch = len(ranks.shape) == 2
        shape = None if flat_batch else ops.shape(ranks)
        if not flat_batch:
            ranks = ops.reshape(ranks, (-1, num_features))
        # features first, so that the matmul batches over them without a
        # transpose of the gathered (F, N, slots) values (at batch 512 that
        # transpose and an einsum cost more than the rest of the lookup)
        ranks = ops.transpose(ops.cast(ranks, self.index_dtype))
        ranks = ops.expand_dims(ranks, -1)
        base = ops.convert_to_tensor(self.base[:, None, :])
        if self.single_block:
            positions = ops.add(ops.multiply(
                ranks, ops.convert_to_tensor(self.widths[:, None, None])), base)
        else:
            member = ops.logical_and(
                ops.greater_equal(ranks, ops.convert_to_tensor(self.start[:, None, :])),
                ops.less(ranks, ops.convert_to_tensor(self.stop[:, None, :])))
            positions = ops.where(member, ops.add(ops.multiply(
                ranks, ops.convert_to_tensor(self.scale[:, None, :])), base), 0)
        values = ops.matmul(take_rows(self.table, positions), self.projections)
        vectors = ops.transpose(values, (1, 0, 2))
        if not flat_batch:
            vectors = ops.reshape(vectors, (*shape[:-1], num_features, values.shape[-1]))
        return vectors

    def _block_diagonal(self, ranks, num_features):
        output_dim = self.projections.shape[-1] // num_features
        shape = (-1,)
        if len(ranks.shape) != 2:
            shape = ops.shape(ranks)[:-1]
            ranks = ops.reshape(ranks, (-1, num_features))
        # each slot's feature's rank: (N, T)
        ranks = take_columns(ops.cast(ranks, self.index_dtype), self.slot_feature)
        base = ops.convert_to_tensor(self.base)
        if self.single_block:
            positions = ops.add(ops.multiply(ranks, ops.convert_to_tensor(self.scale)), base)
        else:
            member = ops.logical_and(
                ops.greater_equal(ranks, ops.convert_to_tensor(self.start)),
                ops.less(ranks, ops.convert_to_tensor(self.stop)))
            positions = ops.where(member, ops.add(ops.multiply(
                ranks, ops.convert_to_tensor(self.scale)), base), 0)
        vectors = ops.matmul(take_rows(self.table, positions), self.projections)
        return ops.reshape(vectors, (*shape, num_features, output_dim))


def _is_per_feature(inputs):
    """A dict, or a list / tuple of arrays or tensors (one per feature); a
    nested Python list of numbers stays the padded form."""
    if isinstance(inputs, dict):
        return True
    return isinstance(inputs, (list, tuple)) and any(
        x is None or not isinstance(x, (list, tuple, int, float, np.generic))
        for x in inputs)


def _has_keras_tensor(inputs):
    values = inputs.values() if isinstance(inputs, dict) else inputs
    return any(keras.backend.is_keras_tensor(x) for x in values)


def _concatenate(parts, dtype=None):
    if all(is_host_array(x) for x in parts):
        return np.concatenate([np.asarray(x, dtype=dtype) for x in parts], axis=-1)
    # ops.concatenate promotes int32 and int64 ids to int64 (never a cast
    # that could wrap a huge id onto a valid one)
    return ops.concatenate(parts, axis=-1)


def _reduce_bags(values, coefficients, sizes):
    """`(..., sum(sizes), w)` vectors weighted by `coefficients` (None: all
    1) and summed over each member's `sizes[k]` consecutive columns:
    `(..., len(sizes), w)`."""
    if coefficients is not None:
        values = ops.multiply(values, ops.expand_dims(coefficients, -1))
    if np.all(sizes == 1):
        return values
    if np.all(sizes == sizes[0]) and len(values.shape) == 3:
        # equal bags: a reshape and one sum, no matmul
        shape = (-1, len(sizes), int(sizes[0]), int(values.shape[-1]))
        return ops.sum(ops.reshape(values, shape), axis=-2)
    # A matmul with a 0/1 column matrix: XLA compiles it (TensorFlow's
    # SegmentSum does not), though it costs `len(sizes)` times the flops of a
    # plain sum (a sorted segment sum ran 1.8x faster on a CPU for MLPerf's 26
    # bags, without XLA).
    segments = np.zeros((int(sizes.sum()), len(sizes)), dtype="float32")
    segments[np.arange(int(sizes.sum())), np.repeat(np.arange(len(sizes)), sizes)] = 1.0
    return ops.einsum("...lw,lm->...mw", values, ops.convert_to_tensor(segments))


def _project_members(values, projections):
    """`(..., m, w)` member vectors times their own `(m, w, d)` projections:
    `(..., m, d)`, without moving the members' axis (a batched matmul over
    members transposes the vectors there and back).

    A few narrow members make one matmul with the block-diagonal matrix of
    their projections (TensorFlow ran ten width-1 members' step in half the
    time of a broadcast multiply, a third of an einsum's); its zero blocks
    cost `m` times the flops, and they turn an inf in one member's row or
    projection into NaN in the group's other members, where a member's own
    matmul would keep it to that member. Wider groups: one matmul each."""
    members, width, dim = (int(n) for n in projections.shape)
    if members * members * width * dim <= _BLOCK_DIAGONAL_MAX_ENTRIES:
        if members == 1:
            matrix = ops.reshape(projections, (width, dim))
        else:
            eye = ops.convert_to_tensor(np.eye(members, dtype="float32"))
            matrix = ops.reshape(ops.einsum("kwd,kn->kwnd", projections, eye),
                                 (members * width, members * dim))
        flat = ops.reshape(values, (-1, members * width))
        return ops.reshape(ops.matmul(flat, matrix), (-1, members, dim))
    vectors = ops.unstack(values, num=members, axis=-2)
    matrices = ops.unstack(projections, num=members, axis=0)
    return ops.stack([ops.matmul(v, p) for v, p in zip(vectors, matrices)], axis=-2)


# The largest block-diagonal projection matrix `_project_members` makes.
_BLOCK_DIAGONAL_MAX_ENTRIES = 1 << 12


def _permuted(x, positions, axis):
    """`take_columns(x, positions, axis)` for a permutation `positions`,
    whose gradient is the inverse permutation's gather (a gather's gradient
    is a scatter-add, or on TensorFlow a segment sum, of the whole tensor)."""
    inverse = np.argsort(positions)

    def forward(x):
        return take_columns(x, positions, axis=axis), ()

    def backward(upstream, unused):
        return (take_columns(upstream, inverse, axis=axis),)

    return residual_gradient(forward, backward, x)


def _per_feature_flags(value, num_features, name):
    if isinstance(value, (list, tuple)):
        if len(value) != num_features or not all(
                isinstance(v, (bool, np.bool_)) for v in value):
            raise ValueError(
                f"`{name}` must be a bool or {num_features} bools, one per feature. "
                f"Received: {value!r}")
        return tuple(bool(v) for v in value)
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"`{name}` must be a bool or {num_features} bools, one per feature. "
            f"Received: {value!r}")
    return (bool(value),) * num_features


_PLANNING_KEYS = ("num_blocks", "alpha", "budget_bytes", "round_dims")


def _planning_args(plan, args, feature, counting=False):
    """A feature's planning settings, with `MixedDimEmbedding`'s defaults."""
    defaults = {"num_blocks": plan.num_blocks, "alpha": 0.3, "budget_bytes": None,
                "round_dims": False}
    if args is None:
        return defaults
    if isinstance(args, dict) and "budget" in args:
        # saved before 0.3: a budget in parameters, as the same limit in bytes
        args = dict(args)
        budget = args.pop("budget")
        if budget is not None and args.get("budget_bytes") is None:
            args["budget_bytes"] = (
                FLOAT_BYTES * float(budget)
                + (REMAP_BYTES * plan.input_dim if plan.remapped else 0)
                + (COUNT_BYTES * plan.input_dim if counting else 0))
    if not isinstance(args, dict) or set(args) - set(_PLANNING_KEYS):
        raise ValueError(
            f"Feature {feature}'s planning_args must be None or a dict with keys "
            f"among {_PLANNING_KEYS}. Received: {args!r}")
    defaults.update(args)
    return defaults


def _layer_weights(layer, plan):
    if hasattr(layer, "block_embeddings"):
        if layer.plan != plan:
            raise ValueError(f"Layer {layer.name!r} has a different plan.")
        return ([ops.convert_to_numpy(t) for t in layer.block_embeddings],
                [None if p is None else ops.convert_to_numpy(p)
                 for p in layer.block_projections])
    table = ops.convert_to_numpy(layer.embeddings)
    if table.shape != (plan.input_dim, plan.output_dim) or plan.num_blocks != 1:
        raise ValueError(
            f"Layer {layer.name!r} has a table of shape {table.shape}; the feature's "
            f"plan is {plan}.")
    return [table], [None]


class _PerMember(initializers.Initializer):
    """Initializes each `(w, d)` projection of a stack on its own, so fan-in
    and fan-out are those of one projection, as in `MixedDimEmbedding`."""

    def __init__(self, initializer):
        self.initializer = initializers.get(initializer)

    def __call__(self, shape, dtype=None):
        return ops.stack([self.initializer(shape[1:], dtype=dtype)
                          for _ in range(shape[0])])

    def get_config(self):
        return {"initializer": initializers.serialize(self.initializer)}


class _StackedIdentityRanks(initializers.Initializer):
    """Each feature's ids are its ranks: `arange(n_f)` end to end."""

    def __init__(self, input_dims):
        self.input_dims = [int(n) for n in input_dims]

    def __call__(self, shape, dtype=None):
        return ops.concatenate([ops.arange(n, dtype=dtype or "int32")
                                for n in self.input_dims])

    def get_config(self):
        return {"input_dims": self.input_dims}
