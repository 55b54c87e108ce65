"""`StackedEmbedding`: every feature's tables in a few shared variables."""

import numpy as np
from keras import initializers
from keras import layers
from keras import ops
from keras import regularizers
from keras import saving

from keras_mixed_dim.backend import take_rows
from keras_mixed_dim.layers.ids import is_host_array
from keras_mixed_dim.layers.ids import sanitize_numpy_ids
from keras_mixed_dim.layers.ids import valid_int_ids
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
class StackedEmbedding(layers.Layer):
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
    `remap` of all features' id -> rank tables end to end. The tables'
    names match `SparseRowOptimizer`'s default rule, so they get sparse row
    updates.

    Not supported (use the per-feature layers for these): bags of ids per
    feature (`combiner`), frequency counting, re-ranking and re-planning.

    Args:
        features: One entry per feature: an integer vocabulary size (a
            uniform table of `output_dim`), or a `BlockPlan` (or its config)
            for a mixed-dimension table.
        output_dim: Integer. The common dimension of every output vector.
        embeddings_initializer: Initializer for the tables.
        projection_initializer: Initializer for the projections.
        embeddings_regularizer: Regularizer for the tables.
        projection_regularizer: Regularizer for the projections.
        mask_zero: Whether id 0 is padding; the mask is `ids != 0`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Integer ids of shape `(..., num_features)`, one id per
            feature.

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
        **kwargs,
    ):
        if (not isinstance(output_dim, (int, np.integer)) or isinstance(output_dim, bool)
                or output_dim <= 0):
            raise ValueError(
                f"`output_dim` must be a positive integer. Received: {output_dim!r}")
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
        self.plans = tuple(plans)
        self.input_dims = np.array([p.input_dim for p in plans], dtype="int64")
        if self.input_dims.max() > np.iinfo(np.int32).max:
            raise ValueError("Vocabularies must be below 2**31 ids.")
        self.remapped = any(p.remapped for p in plans)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.projection_initializer = initializers.get(projection_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.projection_regularizer = regularizers.get(projection_regularizer)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.autocast = False
        self.groups = _groups(plans)

    @property
    def num_features(self):
        return len(self.plans)

    def build(self, input_shape=None):
        if self.built:
            return
        self.tables, self.projections = [], []
        for group in self.groups:
            self.tables.append(self.add_weight(
                shape=(group.rows, group.width),
                initializer=self.embeddings_initializer,
                regularizer=self.embeddings_regularizer,
                name=f"{group.name}_embeddings"))
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
        self.built = True

    def __call__(self, inputs, *args, **kwargs):
        if is_host_array(inputs):
            self._check_num_features(np.shape(inputs))
            array = sanitize_numpy_ids(inputs, int(self.input_dims.max()), self.name)
            inputs = np.where(array < self.input_dims.astype("int32"), array, -1)
        return super().__call__(inputs, *args, **kwargs)

    def _check_num_features(self, shape):
        if not shape or shape[-1] != self.num_features:
            raise ValueError(
                f"Layer {self.name!r} has {self.num_features} features; its ids "
                f"need a last axis of that size. Received shape {tuple(shape)}.")

    def call(self, inputs):
        self._check_num_features(inputs.shape)
        ids, valid = valid_int_ids(inputs, int(self.input_dims.max()), self.name)
        ids = ops.cast(ids, "int32")
        valid = ops.logical_and(valid, ops.less(ids, self.input_dims.astype("int32")))
        ranks = ops.where(valid, ids, -1)
        if self.remap is not None:
            starts = np.concatenate([[0], np.cumsum(self.input_dims)[:-1]]).astype("int32")
            positions = ops.where(valid, ids + starts, 0)
            ranks = ops.where(valid, ops.take(self.remap, positions, axis=0), -1)
        outputs = self.lookup_ranks(ranks)
        return ops.cast(outputs, self.compute_dtype)

    def lookup_ranks(self, ranks):
        """Vectors of per-feature ranks `(..., F)` (-1 gives zeros), float32."""
        parts, placements = [], []
        for group, table, projection in zip(self.groups, self.tables, self.projections):
            features = np.asarray(group.features)
            every_feature = np.array_equal(features, np.arange(self.num_features))
            member_ranks = ranks if every_feature else ops.take(ranks, features, axis=-1)
            start = np.asarray(group.start, dtype="int32")
            stop = np.asarray(group.stop, dtype="int32")
            member = ops.logical_and(ops.greater_equal(member_ranks, start),
                                     ops.less(member_ranks, stop))
            rows = ops.where(member, member_ranks - start + np.asarray(
                group.offset, dtype="int32"), 0)
            values = take_rows(table, rows)
            values = ops.where(ops.expand_dims(member, -1), values, 0.0)
            if projection is not None:
                values = ops.einsum("...fw,fwd->...fd", values, projection)
            parts.append(values)
            placement = np.zeros((len(features), self.num_features), dtype="float32")
            placement[np.arange(len(features)), features] = 1.0
            placements.append(placement)
        if len(parts) == 1 and np.array_equal(placements[0], np.eye(self.num_features)):
            return parts[0]
        # Every feature's blocks are disjoint in rank, so summing the groups'
        # vectors into their features' slots gives each id its one vector.
        stacked = ops.concatenate(parts, axis=-2) if len(parts) > 1 else parts[0]
        return ops.einsum("...gd,gf->...fd", stacked, np.concatenate(placements))

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape), self.output_dim)

    def feature_weights(self, feature):
        """Feature `feature`'s block tables and projections (None when a block
        has none), read out of the stacked variables as numpy arrays, in the
        order of `MixedDimEmbedding.block_embeddings` / `block_projections`."""
        plan = self.plans[feature]
        tables, projections = [None] * plan.num_blocks, [None] * plan.num_blocks
        for group, table, projection in zip(self.groups, self.tables, self.projections):
            for k, (f, i) in enumerate(zip(group.features, group.blocks)):
                if f != feature:
                    continue
                offset, rows = group.offset[k], plan.blocks[i].rows
                tables[i] = ops.convert_to_numpy(table)[offset:offset + rows]
                if projection is not None:
                    projections[i] = ops.convert_to_numpy(projection)[k]
        return tables, projections

    def set_from_layers(self, per_feature_layers):
        """Copies the weights of built per-feature layers into this layer.

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
        per_feature = [_layer_weights(layer, plan) for layer, plan in
                       zip(per_feature_layers, self.plans)]
        for group, table, projection in zip(self.groups, self.tables, self.projections):
            table_value = np.array(ops.convert_to_numpy(table))
            projection_value = None if projection is None else np.array(
                ops.convert_to_numpy(projection))
            for k, (f, i) in enumerate(zip(group.features, group.blocks)):
                tables, projections = per_feature[f]
                table_value[group.offset[k]:group.offset[k] + tables[i].shape[0]] = tables[i]
                if projection_value is not None:
                    projection_value[k] = projections[i]
            table.assign(table_value)
            if projection is not None:
                projection.assign(projection_value)
        if self.remap is not None:
            remaps = []
            for layer, plan in zip(per_feature_layers, self.plans):
                remap = getattr(layer, "remap", None)
                remaps.append(np.arange(plan.input_dim, dtype="int32") if remap is None
                              else ops.convert_to_numpy(remap))
            self.remap.assign(np.concatenate(remaps).astype("int32"))

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
        stacked = cls(plans, output_dims.pop(), **kwargs)
        if all(layer.built for layer in per_feature_layers):
            stacked.set_from_layers(per_feature_layers)
        return stacked

    @property
    def plan_bytes(self):
        """Bytes of all weights: float32 tables and projections, int32 remap."""
        total = sum(int(np.prod(t.shape)) for t in self.tables)
        total += sum(int(np.prod(p.shape)) for p in self.projections if p is not None)
        return 4 * total + (4 * int(self.input_dims.sum()) if self.remapped else 0)

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
        })
        return config


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
