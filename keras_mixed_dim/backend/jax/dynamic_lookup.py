"""`DynamicEmbedding`'s lookup on JAX (JAX-only module).

The portable `DynamicEmbedding._vectors` with the same lanes, gathers and
select, written with `jax.numpy` where `keras.ops` adds work XLA keeps: the
tier of a slot by comparisons with the tier bounds (`ops.digitize` is a
`searchsorted`), the QR quotient and remainder of a bucket already clipped
to be non-negative by `lax.div` and `lax.rem` (`floor_divide` and `mod`
correct for signs), and gathers of rows known to be in range without the
bounds checks of `jnp.take`'s default "fill" mode (on the forward gather
and on its gradient's scatter). The row step's tapped lookup
(`sparse_rows.take_rows`) is used while it traces, so `SparseRowOptimizer`
still sees the rows read.
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

from keras_mixed_dim.backend.jax import sparse_rows


def _take(table, rows):
    """Rows of `table` (every index in range)."""
    tapped = sparse_rows.take_rows(table, rows)
    if tapped is not None:
        return tapped
    value = jnp.asarray(table.value if hasattr(table, "value") else table)
    return value.at[rows].get(mode="promise_in_bounds")


def vectors(layer, safe, admitted, buckets):
    """`DynamicEmbedding._vectors` (same contract, same values)."""
    layout, plan, num_tiers = layer.layout, layer.plan, layer.num_tiers
    safe, buckets = jnp.asarray(safe, jnp.int32), jnp.asarray(buckets, jnp.int32)
    bucket = jnp.clip(buckets, 0, plan.fallback_range - 1)
    valid = bucket == buckets
    unused = jnp.where(valid, num_tiers, num_tiers + 1).astype(jnp.int32)
    # the number of tier bounds at or below the slot: `digitize`'s bin
    tier = jnp.zeros_like(safe)
    for bound in layer._tier_bounds:
        tier = tier + (safe >= bound).astype(jnp.int32)
    piece = jnp.where(admitted, tier, unused)
    if plan.fallback == "qr":
        remainder = np.int32(plan.fallback_tables[1])
        fallback = {"fallback_quotient": lax.div(bucket, remainder),
                    "fallback_remainder": lax.rem(bucket, remainder)}
    else:
        fallback = {"fallback_embeddings": bucket}
    fallback = {name: rows + layout.start[name] if layout.start[name] else rows
                for name, rows in fallback.items()}
    lanes = {}
    for name, rows in fallback.items():
        lanes.setdefault(layout.buffer[name], []).append(rows)
    for t in range(num_tiers):
        name = f"tier_{t}_embeddings"
        lane = lanes.setdefault(layout.buffer[name], [])
        shift = layout.start[name] - int(layer.id_map.offsets[t])
        if not lane:
            lane.append(jnp.asarray(layer._tier_rows(safe, t), jnp.int32))
        else:
            lane[0] = jnp.where(piece == t, safe + shift if shift else safe, lane[0])
    values = {}
    for b, rows in lanes.items():
        table = layer.width_tables[b]
        if len(rows) == 1:
            values[b] = [_take(table, rows[0])]
        else:
            gathered = _take(table, jnp.stack(rows))
            values[b] = [gathered[i] for i in range(len(rows))]
    pieces = [values[layout.buffer[f"tier_{t}_embeddings"]][0] for t in range(num_tiers)]
    first = values[layout.buffer[next(iter(fallback))]]
    if plan.fallback == "qr":
        # the quotient's lane holds a tier's row for that tier's ids: selected
        # away before the product (a diverged tier row would give the
        # remainder row a 0 * inf gradient)
        pieces.append(jnp.where((piece == num_tiers)[..., None], first[0], 0.0) * first[1])
    else:
        pieces.append(first[0])
    full = [g for g in range(len(pieces)) if g not in layer._projected_pieces]
    if layer._projection_rows.size:
        stacked = jnp.concatenate([pieces[g] for g in layer._projected_pieces], axis=-1)
        # a select, not a product with the mask (0 * inf is NaN)
        # the piece of each stacked column, compared with the id's piece:
        # the mask's rows without a gather
        columns = np.argmax(layer._piece_mask, axis=0).astype(np.int32)
        keep = piece[..., None] == columns
        projections = _take(layer.width_tables[layout.widths.index(layer.output_dim)],
                            jnp.asarray(layer._projection_rows, jnp.int32))
        outputs = jnp.where(keep, stacked, 0.0) @ projections
    else:
        outputs = jnp.zeros_like(pieces[full[-1]])
    for g in full:
        outputs = jnp.where((piece == g)[..., None], pieces[g], outputs)
    return outputs, valid
