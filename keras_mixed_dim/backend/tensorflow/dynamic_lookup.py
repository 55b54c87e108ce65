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
    index = {b: lanes[b][0] if len(lanes[b]) == 1 else tf.stack(lanes[b]) for b in order}
    tables = [_resource(layer.width_tables[b]) for b in order]
    projected = layer._projected_pieces
    full = [g for g in range(num_tiers + 1) if g not in projected]
    widths = [*plan.tier_dims, plan.fallback_dim]
    d = layer.output_dim
    d_buffer = layout.widths.index(d) if projected else None
    projection_rows = tf.constant(layer._projection_rows, tf.int32)
    keep = tf.gather(tf.constant(layer._piece_mask > 0), piece) if projected else None
    selects = {g: tf.expand_dims(tf.equal(piece, g), -1) for g in full}
    fallback_lane = layout.buffer[next(iter(fallback))]

    @tf.custom_gradient
    def lookup():
        gathered = {b: tf.gather(v, index[b]) for b, v in zip(order, tables)}

        def lane_value(b, k):
            return gathered[b] if len(lanes[b]) == 1 else gathered[b][k]

        pieces = {}
        for (b, k), gs in feeds.items():
            for g in gs:
                if not isinstance(g, str):
                    pieces[g] = lane_value(b, k)
        first = lane_value(fallback_lane, 0)
        second = lane_value(fallback_lane, 1) if plan.fallback == "qr" else None
        pieces[num_tiers] = first * second if second is not None else first
        if projected:
            projections = tf.gather(_resource(layer.width_tables[d_buffer]), projection_rows)
            stacked = tf.concat([pieces[g] for g in projected], axis=-1)
            # a select, not a product with the mask (0 * inf is NaN: one
            # diverged row would reach every id's output)
            masked = tf.where(keep, stacked, tf.zeros_like(stacked))
            outputs = tf.matmul(masked, projections)
        else:
            outputs = tf.zeros_like(pieces[full[-1]])
        for g in full:
            outputs = tf.where(selects[g], pieces[g], outputs)

        def grad(upstream, variables):
            upstream = tf.convert_to_tensor(upstream)
            piece_grads, row_grads = {}, {b: [] for b in order}
            if projected:
                row_grads.setdefault(d_buffer, [])
            if projected:
                reaching = upstream
                for g in full:
                    # what a full piece's ids send down the projection path
                    # is what the selects above send: zeros
                    reaching = tf.where(selects[g], tf.zeros_like(reaching), reaching)
                row_grads[d_buffer].append(
                    (projection_rows, tf.matmul(masked, reaching, transpose_a=True)))
                through = tf.matmul(reaching, projections, transpose_b=True)
                through = tf.where(keep, through, tf.zeros_like(through))
                for g, part in zip(projected, tf.split(
                        through, [widths[g] for g in projected], axis=-1)):
                    piece_grads[g] = part
            for g in full:
                piece_grads[g] = tf.where(selects[g], upstream, tf.zeros_like(upstream))
            fallback_grad = piece_grads[num_tiers]
            for b in order:
                lane_grads = []
                for k in range(len(lanes[b])):
                    total = None
                    for g in feeds[(b, k)]:
                        if g == "fallback":
                            part = fallback_grad * second if second is not None else fallback_grad
                        elif g == "fallback_second":
                            part = fallback_grad * first
                        else:
                            part = piece_grads[g]
                        total = part if total is None else total + part
                    lane_grads.append(total)
                rows = tf.reshape(index[b], [-1])
                values = tf.reshape(lane_grads[0] if len(lane_grads) == 1 else tf.stack(lane_grads),
                                    [-1, int(tables[order.index(b)].shape[-1])])
                row_grads[b].insert(0, (rows, values))
            slices = {}
            for b in row_grads:
                parts = row_grads[b]
                rows = parts[0][0] if len(parts) == 1 else tf.concat([r for r, _ in parts], 0)
                values = parts[0][1] if len(parts) == 1 else tf.concat([v for _, v in parts], 0)
                slices[b] = tf.IndexedSlices(values, rows, tf.constant(
                    tuple(layer.width_tables[b].shape), tf.int64))
            return [], [slices.get(_buffer_of(layer, v)) for v in variables]

        return outputs, grad

    outputs = lookup()
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


def _buffer_of(layer, variable):
    """Which of `layer.width_tables` `variable` (as the tape saw it: the
    variable, or a replica's copy under tf.distribute) is; None for any
    other."""
    for b, table in enumerate(layer.width_tables):
        value = _resource(table)
        if variable is value or variable.ref() == value.ref():
            return b
        copies = getattr(value, "values", None)
        if copies is not None and any(variable is c for c in copies):
            return b
    return None
