"""`QuantizedStackedEmbedding`: a stacked layer's tables as int8 or float16.

As `QuantizedMixedDimEmbedding` for one feature: each stacked table row is
stored as int8 with one float32 scale per row, `q = round(x * scale)`,
`scale = 127 / max|x|`, read back as `q / scale`, or as float16.
Projections stay float32 and the id -> rank table int32. Made with
`keras_mixed_dim.compress.quantize_layer` or `quantize_model`.
"""

import numpy as np
from keras import ops
from keras import saving

from keras_mixed_dim.backend import take_columns
from keras_mixed_dim.layers.quantized_mixed_dim_embedding import TABLE_DTYPES
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding
from keras_mixed_dim.layers.stacked_embedding import _PerMember
from keras_mixed_dim.layers.stacked_embedding import _StackedIdentityRanks


@saving.register_keras_serializable(package="keras_mixed_dim")
class QuantizedStackedEmbedding(StackedEmbedding):
    """A `StackedEmbedding` whose stacked tables are int8 or float16.

    Made from a trained layer with `quantize_layer` (or `quantize_model` for
    a whole model, e.g. a stacked DLRM converted by `compress_model`).
    Lookups gather the stored rows (and their scales) and dequantize only
    the rows looked up. The tables are not trainable; the projections are.

    Example:

    >>> layer = StackedEmbedding([1000, 50], output_dim=8)
    >>> layer.build()
    >>> small = keras_mixed_dim.compress.quantize_layer(layer, "int8")
    >>> small(np.array([[3, 49]])).shape
    (1, 2, 8)

    Args:
        table_dtype: `"int8"` (a float32 scale per row) or `"float16"`.
        *args, **kwargs: As for `StackedEmbedding` (without frequency
            counting).

    Call arguments and returns: as for `StackedEmbedding`.
    """

    def __init__(self, *args, table_dtype="int8", **kwargs):
        if table_dtype not in TABLE_DTYPES:
            raise ValueError(
                f"`table_dtype` must be one of {TABLE_DTYPES}. Received: {table_dtype!r}")
        counting = kwargs.get("count_frequencies")
        if counting is True or (isinstance(counting, (list, tuple)) and any(counting)):
            raise ValueError("A quantized embedding does not count frequencies.")
        super().__init__(*args, **kwargs)
        self.table_dtype = table_dtype

    def build(self, input_shape=None):
        if self.built:
            return
        self.tables, self.scales, self.projections = [], [], []
        for group in self.groups:
            self.tables.append(self.add_weight(
                shape=(group.rows, group.width), initializer="zeros",
                dtype=self.table_dtype, trainable=False,
                name=f"{group.name}_embeddings"))
            scale = None
            if self.table_dtype == "int8":
                scale = self.add_weight(
                    shape=(group.rows,), initializer="ones", trainable=False,
                    name=f"{group.name}_embeddings_scale")
            self.scales.append(scale)
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
        self._initial_ranks = None
        self.frequency_counts = None
        self.built = True

    def rebuild(self, plans, per_feature):
        raise ValueError("A quantized embedding cannot be re-planned; re-plan the "
                         "float layer and quantize it again.")

    def lookup_ranks(self, ranks):
        """Vectors of per-feature ranks `(..., F)` (-1 gives zeros), float32."""
        parts, placements = [], []
        for group, table, scale, projection in zip(
                self.groups, self.tables, self.scales, self.projections):
            features = np.asarray(group.features)
            every_feature = np.array_equal(features, np.arange(self.num_features))
            member_ranks = ranks if every_feature else take_columns(ranks, features)
            start = np.asarray(group.start, dtype="int32")
            stop = np.asarray(group.stop, dtype="int32")
            member = ops.greater_equal(member_ranks, np.maximum(start, 0))
            if np.any(stop < self.input_dims[features]):
                member = ops.logical_and(member, ops.less(member_ranks, stop))
            shift = ops.convert_to_tensor(
                np.asarray(group.offset, dtype="int32") - start)
            rows = ops.where(member, ops.add(member_ranks, shift), 0)
            values = ops.cast(ops.take(table, rows, axis=0), "float32")
            if scale is not None:
                # only the rows looked up are dequantized
                values = ops.divide(values, ops.expand_dims(ops.take(scale, rows, axis=0), -1))
            values = ops.where(ops.expand_dims(member, -1), values, 0.0)
            if projection is not None:
                values = ops.einsum("...fw,fwd->...fd", values, projection)
            parts.append(values)
            placement = np.zeros((len(features), self.num_features), dtype="float32")
            placement[np.arange(len(features)), features] = 1.0
            placements.append(placement)
        if len(parts) == 1 and np.array_equal(placements[0], np.eye(self.num_features)):
            return parts[0]
        stacked = ops.concatenate(parts, axis=-2) if len(parts) > 1 else parts[0]
        return ops.einsum("...gd,gf->...fd", stacked, np.concatenate(placements))

    @property
    def plan_bytes(self):
        """Bytes of all weights at their stored dtypes: the tables at 1
        (int8, plus a float32 scale per row) or 2 bytes, float32
        projections, int32 remap."""
        entries = sum(g.rows * g.width for g in self.groups)
        rows = sum(g.rows for g in self.groups)
        table_bytes = entries + 4 * rows if self.table_dtype == "int8" else 2 * entries
        return super().plan_bytes - 4 * entries + table_bytes

    def get_config(self):
        config = super().get_config()
        config["table_dtype"] = self.table_dtype
        return config
