"""`QuantizedMixedDimEmbedding`: int8 / float16 block tables for serving.

Following `keras.layers.Embedding.quantize("int8")`: each table row is
stored as int8 with one float32 scale per row, `q = round(x * scale)`,
`scale = 127 / max|x|`, and read back as `q / scale`. Projections and the
id -> rank table stay float32 / int32. Made with
`keras_mixed_dim.compress.quantize_layer` or `quantize_model`.
"""

from keras import ops
from keras import saving

from keras_mixed_dim.layers.mixed_dim_embedding import MixedDimEmbedding

TABLE_DTYPES = ("int8", "float16")


@saving.register_keras_serializable(package="keras_mixed_dim")
class QuantizedMixedDimEmbedding(MixedDimEmbedding):
    """A `MixedDimEmbedding` whose block tables are stored as int8 or float16.

    Made from a trained layer with `quantize_layer` (or `quantize_model` for
    a whole model). Lookups gather the int8 rows and their scales and
    dequantize only the rows looked up.

    Args:
        table_dtype: `"int8"` (a float32 scale per row) or `"float16"`.
        *args, **kwargs: As for `MixedDimEmbedding` (without frequency
            counting).

    Call arguments and returns: as for `MixedDimEmbedding`.

    Example:

    >>> from keras_mixed_dim.compress import quantize_layer
    >>> layer = MixedDimEmbedding(1000, 16, alpha=0.3)
    >>> layer.build()
    >>> small = quantize_layer(layer, "int8")
    >>> small(np.array([3, 999])).shape
    (2, 16)
    """

    def __init__(self, *args, table_dtype="int8", **kwargs):
        if table_dtype not in TABLE_DTYPES:
            raise ValueError(
                f"`table_dtype` must be one of {TABLE_DTYPES}. Received: {table_dtype!r}"
            )
        if kwargs.get("count_frequencies"):
            raise ValueError("A quantized embedding does not count frequencies.")
        super().__init__(*args, **kwargs)
        self.table_dtype = table_dtype

    def build(self, input_shape=None):
        if self.built:
            return
        if self.plan.has_qr_blocks:
            raise ValueError(
                f"Layer {self.name!r} stores blocks as quotient-remainder pairs; "
                "quantized tables are for full blocks only.")
        self.block_qr = [None] * self.plan.num_blocks
        self.block_embeddings, self.block_scales, self.block_projections = [], [], []
        for i, block in enumerate(self.plan.blocks):
            self.block_embeddings.append(self.add_weight(
                shape=(block.rows, block.dim), initializer="zeros",
                dtype=self.table_dtype, trainable=False,
                name=f"block_{i}_embeddings",
            ))
            scale = None
            if self.table_dtype == "int8":
                scale = self.add_weight(
                    shape=(block.rows,), initializer="ones", trainable=False,
                    name=f"block_{i}_embeddings_scale",
                )
            self.block_scales.append(scale)
            self.block_projections.append(self._build_projection(i))
        self._build_remap()
        self.frequency_counts = None
        self.built = True

    def rebuild(self, plan, ranks):
        raise ValueError("A quantized embedding cannot be re-planned; re-plan the "
                         "float layer and quantize it again.")

    def _dequantized(self, index, values, rows=None):
        values = ops.cast(values, "float32")
        if self.table_dtype != "int8":
            return values
        scale = self.block_scales[index]
        if rows is not None:
            scale = ops.take(scale, rows, axis=0)
        return ops.divide(values, ops.expand_dims(scale, -1))

    def _gather_block(self, index, rows):
        values = ops.take(self.block_embeddings[index], rows, axis=0)
        return self._dequantized(index, values, rows)

    def _head_table(self):
        parts = []
        for i in range(self._head_blocks):
            part = self._dequantized(i, self.block_embeddings[i])
            if self.block_projections[i] is not None:
                part = ops.matmul(part, self.block_projections[i])
            parts.append(part)
        parts.append(ops.zeros((1, self.output_dim), dtype="float32"))
        return ops.concatenate(parts, axis=0)

    def block_outputs(self, index):
        table = self._dequantized(index, self.block_embeddings[index])
        projection = self.block_projections[index]
        return table if projection is None else ops.matmul(table, projection)

    @property
    def bytes(self):
        """Bytes of all weights at their stored dtypes: the tables at 1
        (int8, plus a float32 scale per row) or 2 bytes, float32
        projections, int32 remap."""
        plan = self.plan
        entries = plan.embedding_params
        rows = sum(block.rows for block in plan.blocks)
        table_bytes = entries + 4 * rows if self.table_dtype == "int8" else 2 * entries
        return int(plan.bytes - 4 * entries + table_bytes)

    def get_config(self):
        config = super().get_config()
        config["table_dtype"] = self.table_dtype
        return config
