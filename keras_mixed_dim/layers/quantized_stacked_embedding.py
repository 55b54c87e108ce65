"""`QuantizedStackedEmbedding`: a stacked layer's tables as int8 or float16.

As `QuantizedMixedDimEmbedding` for one feature: each stacked table row is
stored as int8 with one float32 scale per row, `q = round(x * scale)`,
`scale = 127 / max|x|`, read back as `q / scale`, or as float16.
Projections stay float32 and the id -> rank table int32. Made with
`keras_mixed_dim.compress.quantize_layer` or `quantize_model`.
"""

from keras import ops
from keras import saving

from keras_mixed_dim.layers.quantized_mixed_dim_embedding import TABLE_DTYPES
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding


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
        if not self.built:
            self.scales = []
        super().build(input_shape)

    def add_table(self, group):
        table = self.add_weight(
            shape=(group.rows, group.width), initializer="zeros",
            dtype=self.table_dtype, trainable=False, name=f"{group.name}_embeddings")
        scale = None
        if self.table_dtype == "int8":
            scale = self.add_weight(
                shape=(group.rows,), initializer="ones", trainable=False,
                name=f"{group.name}_embeddings_scale")
        self.scales.append(scale)
        return table

    def rebuild(self, plans, per_feature):
        raise ValueError("A quantized embedding cannot be re-planned; re-plan the "
                         "float layer and quantize it again.")

    def read_rows(self, group_index, rows):
        values = ops.cast(ops.take(self.tables[group_index], rows, axis=0), "float32")
        scale = self.scales[group_index]
        if scale is not None:
            # only the rows looked up are dequantized
            values = ops.divide(values, ops.expand_dims(ops.take(scale, rows, axis=0), -1))
        return values

    def _plans_bytes(self):
        """Bytes of all weights at their stored dtypes: the tables at 1
        (int8, plus a float32 scale per row) or 2 bytes, float32
        projections, int32 remap."""
        entries = sum(g.rows * g.width for g in self.groups)
        rows = sum(g.rows for g in self.groups)
        table_bytes = entries + 4 * rows if self.table_dtype == "int8" else 2 * entries
        return super()._plans_bytes() - 4 * entries + table_bytes

    def get_config(self):
        config = super().get_config()
        config["table_dtype"] = self.table_dtype
        return config
