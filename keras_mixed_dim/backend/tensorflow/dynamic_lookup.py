"""`DynamicEmbedding`'s lookup with a hand-written gradient (TensorFlow).

Without XLA (Keras's default on CPU) a TensorFlow step pays per op, some
15-40 us each, far more than the few thousand rows a batch reads cost; the
portable `keras.ops` lookup is some 40 ops forward, and TensorFlow's
gradients of its gathers, stack, selects and broadcasts add some twice as
many. Here the rows are gathered as there (the same lanes, so the same
rows are read and get a gradient), but the backward is written out: one
`tf.IndexedSlices` per width variable (the rows every lane read and the
projections' rows, with their gradients), so `SparseRowOptimizer` still
updates only the rows a batch read and Keras's dense optimizers still take
the gradient as they take a gather's. The values and gradients equal the
portable path's (tests/backend/tensorflow/test_dynamic_lookup.py).
"""

import tensorflow as tf


def vectors(layer, safe, admitted, buckets):
    """`DynamicEmbedding._vectors` (the same contract and results): output
    vectors of slots `safe` where `admitted`, else of fallback `buckets`,
    and where the bucket was valid.

    Args:
        layer: A built `DynamicEmbedding`.
        safe: int32 slots, clipped into range.
        admitted: bool, where the id reads its slot's row.
        buckets: int32 fallback buckets (out of range: padding).

    Returns:
        `(outputs, valid)`: float32 `safe.shape + (output_dim,)` and bool
        `safe.shape`.
    """
    plan, layout, num_tiers = layer.plan, layer.layout, layer.num_tiers
    safe = tf.convert_to_tensor(safe, tf.int32)
    buckets = tf.convert_to_tensor(buckets, tf.int32)
    admitted = tf.convert_to_tensor(admitted, tf.bool)
    # one id axis, so that the backward's products are plain matmuls
    rank = safe.shape.rank
    ids_shape = safe.shape if safe.shape.is_fully_defined() else tf.shape(safe)
    if rank != 1:
        safe, admitted, buckets = (tf.reshape(x, [-1]) for x in (safe, admitted, buckets))
    bucket = tf.clip_by_value(buckets, 0, plan.fallback_range - 1)
    valid = tf.equal(bucket, buckets)
    # the piece each id reads: its tier's, the fallback's (`num_tiers`) or
    # none (`num_tiers + 1`)
    unused = tf.where(valid, num_tiers, num_tiers + 1)
    tier = (tf.raw_ops.Bucketize(input=safe, boundaries=[float(b) for b in layer._tier_bounds])
            if num_tiers > 1 else tf.zeros_like(safe))
    piece = tf.where(admitted, tier, unused)
    # the lanes of each variable and the pieces each lane feeds, as the
    # portable lookup builds them (the same rows are read)
    if plan.fallback == "qr":
        remainder = plan.fallback_tables[1]
        fallback = {"fallback_quotient": tf.math.floordiv(bucket, remainder),
                    "fallback_remainder": tf.math.floormod(bucket, remainder)}
    else:
        fallback = {"fallback_embeddings": bucket}
    lanes, feeds = {}, {}   # variable -> rows of each lane; (variable, lane) -> pieces
    # a QR fallback's second factor (its remainder) feeds the product
    # through the first factor
    for name, rows in fallback.items():
        lane = lanes.setdefault(layout.buffer[name], [])
        feeds[(layout.buffer[name], len(lane))] = ["fallback_second" if lane else "fallback"]
        lane.append(rows + layout.start[name] if layout.start[name] else rows)
    for t in range(num_tiers):
        name = f"tier_{t}_embeddings"
        b = layout.buffer[name]
        lane = lanes.setdefault(b, [])
        if not lane:
            lane.append(layer._tier_rows(safe, t))
            feeds[(b, 0)] = [t]
        else:
            shift = layout.start[name] - int(layer.id_map.offsets[t])
            lane[0] = tf.where(tf.equal(piece, t), safe + shift if shift else safe, lane[0])
            feeds[(b, 0)].insert(0, t)
    order = sorted(lanes)
    projected = layer._projected_pieces
    full = [g for g in range(num_tiers + 1) if g not in projected]
    widths = [*plan.tier_dims, plan.fallback_dim]
    d_buffer = layout.widths.index(layer.output_dim) if projected else None
    keep = tf.gather(tf.constant(layer._piece_mask > 0), piece) if projected else None
    selects = {g: tf.expand_dims(tf.equal(piece, g), -1) for g in full}
    fallback_lane = layout.buffer[next(iter(fallback))]
    # one gather per variable, the projections' rows with the lanes of
    # theirs: TensorFlow's gradient of a gather on the variable is the
    # `IndexedSlices` of the rows read (no dense read of a table, which
    # after a gather would copy it whole)
    gathered, projections = [], None
    for b in order:
        index = lanes[b][0] if len(lanes[b]) == 1 else tf.reshape(tf.stack(lanes[b]), [-1])
        if b == d_buffer:
            index = tf.concat([index, layer._projection_rows.astype("int32")], 0)
        rows = tf.gather(_resource(layer.width_tables[b]), index)
        if b == d_buffer:
            rows, projections = tf.split(rows, [-1, layer._projection_rows.size])
        gathered.append(rows)
    if projected and d_buffer not in order:
        projections = tf.gather(_resource(layer.width_tables[d_buffer]),
                                layer._projection_rows.astype("int32"))

    @tf.custom_gradient
    def lookup(*inputs):
        """Outputs from the gathered rows (and projections): the gradients
        below are TensorFlow's of the same ops, fused."""
        values = inputs[:len(order)]
        split = {b: [v] if len(lanes[b]) == 1 else tf.split(v, len(lanes[b]))
                 for b, v in zip(order, values)}
        pieces = {g: split[b][k] for (b, k), gs in feeds.items() for g in gs
                  if not isinstance(g, str)}
        first = split[fallback_lane][0]
        second = split[fallback_lane][1] if plan.fallback == "qr" else None
        pieces[num_tiers] = first * second if second is not None else first
        if projected:
            projections = inputs[-1]
            stacked = tf.concat([pieces[g] for g in projected], axis=-1)
            # a select, not a product with the mask (0 * inf is NaN: one
            # diverged row would reach every id's output)
            masked = tf.where(keep, stacked, tf.zeros_like(stacked))
            outputs = tf.matmul(masked, projections)
        else:
            outputs = tf.zeros_like(pieces[full[-1]])
        for g in full:
            outputs = tf.where(selects[g], pieces[g], outputs)

        def grad(upstream):
            piece_grads, grads = {}, []
            for g in full:
                piece_grads[g] = tf.where(selects[g], upstream, tf.zeros_like(upstream))
            if projected:
                reaching = upstream
                for g in full:
                    # the selects above send the projection path zeros
                    # where a full piece is read
                    reaching = tf.where(selects[g], tf.zeros_like(reaching), reaching)
                through = tf.matmul(reaching, projections, transpose_b=True)
                through = tf.where(keep, through, tf.zeros_like(through))
                piece_grads.update(zip(projected, tf.split(
                    through, [widths[g] for g in projected], axis=-1)))
            fallback_grad = piece_grads[num_tiers]
            for b in order:
                lane_grads = []
                for k in range(len(lanes[b])):
                    parts = [fallback_grad * second if g == "fallback" and second is not None
                             else fallback_grad if g == "fallback"
                             else fallback_grad * first if g == "fallback_second"
                             else piece_grads[g] for g in feeds[(b, k)]]
                    lane_grads.append(parts[0] if len(parts) == 1 else tf.add_n(parts))
                grads.append(lane_grads[0] if len(lane_grads) == 1
                             else tf.concat(lane_grads, 0))
            if projected:
                grads.append(tf.matmul(masked, reaching, transpose_a=True))
            return grads

        return outputs, grad

    outputs = lookup(*gathered, *([projections] if projected else []))
    if rank != 1:
        outputs = tf.reshape(outputs, tf.concat([ids_shape, [layer.output_dim]], 0)
                             if isinstance(ids_shape, tf.Tensor) else [*ids_shape, layer.output_dim])
        valid = tf.reshape(valid, ids_shape)
    return outputs, valid


def _resource(variable):
    """The `tf.Variable` of a Keras variable, float32 whatever autocast scope
    the call runs in (called on its own under a mixed policy, a layer is in
    one, and Keras would hand out a cast copy of the whole table), so that
    the gathers read only their rows and the tape sees the variable."""
    value = variable.value
    if not isinstance(value, tf.Variable):
        value = variable._value
    return value
