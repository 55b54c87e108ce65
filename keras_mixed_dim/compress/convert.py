"""Uniform -> mixed-dimension conversion of a trained embedding layer.

The arithmetic (ranking, planning, each block's principal directions,
streamed and optionally sketched) is `keras_mixed_dim.planning.convert`,
numpy only; the layer is built by `MixedDimEmbedding.from_embedding`.
"""

from keras_mixed_dim.layers.mixed_dim_embedding import MixedDimEmbedding
from keras_mixed_dim.planning.convert import SKETCH_THRESHOLD
from keras_mixed_dim.planning.convert import _conversion_budget


def mixed_dim_from_embedding(embedding, counts, alpha="auto", num_blocks=4,
                             budget=None, sketch=None,
                             sketch_threshold=SKETCH_THRESHOLD, sketch_rows=None,
                             round_dims=False, seed=0, name=None,
                             return_report=False, progress=None,
                             keep_id_order=False, budget_bytes=None,
                             budget_fraction=None):
    """A `MixedDimEmbedding` that approximates a trained embedding table.

    Ids are ranked by `counts` and cut into `num_blocks` equal-mass blocks;
    each block is sized by the power rule (within the budget) and given the
    principal directions of its rows of the trained table: block table
    `Y V_k`, projection `V_k^T`. With `alpha=0` and no budget every block
    keeps the full width and the new layer returns exactly the original
    vectors.

    Example:

    >>> table = keras.layers.Embedding(1000, 32)
    >>> table.build()
    >>> counts = np.random.default_rng(0).zipf(1.3, 1000)
    >>> layer = mixed_dim_from_embedding(table, counts, budget_fraction=0.25)
    >>> layer(np.array([3, 999])).shape
    (2, 32)

    Args:
        embedding: A built `keras.layers.Embedding` (not quantized) or its
            `input_dim x output_dim` weight array.
        counts: Per-id counts (from a pass over the data, or a
            `MixedDimEmbedding`'s `frequency_counts`).
        alpha: Power-rule temperature, or `"auto"` (with a `budget`: the
            alpha whose plan has the smallest count-weighted reconstruction
            error; without: 0.3).
        num_blocks: Number of equal-mass blocks.
        budget: Deprecated: a fraction `< 1` of the original float32 bytes,
            or a number of bytes. Use `budget_fraction` / `budget_bytes`.
        sketch: Sketch kind for blocks of more than `sketch_threshold` rows
            (`"osnap"`, `"gaussian"`, `"countsketch"`), or None (default)
            for exact Gram matrices throughout (streamed too, and faster on
            a CPU; see `convert_weights`).
        sketch_threshold: Blocks with more rows are sketched.
        sketch_rows: Rows of the sketch (default by kind and width).
        round_dims: Round block dims to powers of two.
        seed: Seed of the sketches.
        name: Name of the new layer (default: the embedding's name).
        return_report: Also return the `ConversionReport`.
        progress: Optional `progress(rows_done)` callable.
        keep_id_order: Blocks of contiguous ids and no id -> rank table, for
            ids already ranked by frequency (see `convert_weights`).
        budget_bytes: Bytes of the new layer: tables, projections and the
            id -> rank table (default: no budget, the most popular block
            keeps the full width).
        budget_fraction: Alternative to `budget_bytes`: a fraction in
            (0, 1] of the original float32 table's bytes.

    Returns:
        A built `MixedDimEmbedding`, or `(layer, report)` with
        `return_report=True`.
    """
    spec = _conversion_budget("mixed_dim_from_embedding", budget, budget_bytes,
                              budget_fraction)
    return MixedDimEmbedding.from_embedding(
        embedding, counts, alpha=alpha, num_blocks=num_blocks, _budget_spec=spec,
        sketch=sketch, sketch_threshold=sketch_threshold, sketch_rows=sketch_rows,
        round_dims=round_dims, seed=seed, name=name, return_report=return_report,
        progress=progress, keep_id_order=keep_id_order)
