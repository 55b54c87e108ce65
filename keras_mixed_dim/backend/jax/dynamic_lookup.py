"""JAX's own `DynamicEmbedding` lookup for layers with few slots per id
(JAX-only module).

The portable lookup (`DynamicEmbedding._vectors`) gathers every piece (each
tier's row, the fallback's) for every id and selects: its projected pieces,
stacked and masked, go through one product per id. On XLA's CPU the step
then spends its time in elementwise passes over `(ids, output_dim)` and
`(ids, sum of widths)` arrays, forward and backward (at a batch of 4096,
some 0.4 ms of a feature's 0.5 ms lookup; a static embedding's is 0.05).

With few slots for the batch (at most `SLOTS_PER_ID` per id, the small
tables of a streaming budget) every slot's output is computed once instead,
its tier's row through its tier's projection, and each id gathers one row
of that slot table; the fallback's vector is computed for every id (static
shapes) and kept where the id reads it. The outputs equal the portable
path's within float32 rounding, and so do the gradients; as PyTorch's slot
table (`keras_mixed_dim.backend.torch.dynamic_lookup._SlotPlan`), a
diverged projection reaches its own tier's ids alone, where the portable
product reaches every projected id.

Every value no id reads is selected away before a product: a slot row no
admitted id reads enters its projection as zeros, a fallback row as zeros
for the ids that do not read the fallback (0 * inf would be NaN in the
projection's or the other factor's gradient).

Where a `SparseRowOptimizer`'s row step traces (its tapped gathers give the
rows' gradients) or the slots outnumber `SLOTS_PER_ID` per id (a step's
cost would grow with the capacity, not the batch), `vectors` returns None
and the layer runs the portable lookup.
"""

import weakref

import jax.numpy as jnp
import numpy as np
from jax import lax

from keras_mixed_dim.backend.jax import sparse_rows

# the most slots per id of a call for which every slot's output is computed
SLOTS_PER_ID = 4

_PLANS = weakref.WeakKeyDictionary()


def vectors(layer, safe, admitted, buckets):
    """`DynamicEmbedding._vectors` (the same contract) by the slot table, or
    None where the portable lookup serves the call.

    Args:
        layer: A built `DynamicEmbedding`.
        safe: int slots, clipped into range.
        admitted: bool, where the id reads its slot's row.
        buckets: int fallback buckets (out of range: no row).

    Returns:
        `(outputs, valid)`: `safe.shape + (output_dim,)` float32 and bool
        `safe.shape` (where the bucket was in range), or None.
    """
    tables = layer.width_tables
    count = int(np.prod(safe.shape))
    if layer.id_map.num_slots > SLOTS_PER_ID * count or any(
            getattr(t, sparse_rows.TAP_ATTRIBUTE, None) is not None for t in tables):
        return None
    plan = _PLANS.get(layer)
    if plan is None:
        plan = _PLANS[layer] = _SlotPlan(layer)
    shape = tuple(safe.shape)
    outputs, valid = plan.forward(
        [jnp.asarray(getattr(t, "value", t)) for t in tables],
        *(jnp.reshape(jnp.asarray(x), (count,)) for x in (safe, admitted, buckets)))
    return jnp.reshape(outputs, shape + (plan.output_dim,)), jnp.reshape(valid, shape)


class _SlotPlan:
    """A layer's layout as constants, and the slot table's arithmetic."""

    def __init__(self, layer):
        layout, plan = layer.layout, layer.plan
        offsets = [int(o) for o in layer.id_map.offsets]
        self.num_slots = offsets[-1]
        self.output_dim = int(plan.output_dim)
        # each tier: its rows, its projection's (None: full width), its first slot
        self.tiers = [(layout.locate(f"tier_{t}_embeddings"),
                       layout.locate(f"tier_{t}_projection"), offsets[t])
                      for t in range(layer.num_tiers)]
        self.range = int(plan.fallback_range)
        self.qr = plan.fallback == "qr"
        names = ["fallback_quotient", "fallback_remainder"] if self.qr \
            else ["fallback_embeddings"]
        self.remainder = int(plan.fallback_tables[1]) if self.qr else None
        self.fallback_starts = [int(layout.start[name]) for name in names]
        self.fallback_buffer = layout.buffer[names[0]]
        self.fallback_projection = layout.locate("fallback_projection")

    def forward(self, tables, safe, admitted, buckets):
        """`(outputs, valid)` of flat ids."""
        safe, buckets = safe.astype(jnp.int32), buckets.astype(jnp.int32)
        # a bucket out of range (padding: -1) is not its clipped self
        bucket = jnp.clip(buckets, 0, self.range - 1)
        valid = bucket == buckets
        reads = jnp.logical_and(valid, jnp.logical_not(admitted))
        # slots some admitted id reads: the others enter no product
        read = jnp.zeros((self.num_slots,), bool).at[
            jnp.where(admitted, safe, self.num_slots)].set(True, mode="drop")
        outputs = []
        for (b, rows), projection, first in self.tiers:
            piece = tables[b][rows]
            if projection is not None:
                kept = read[first:first + piece.shape[0], None]
                piece = jnp.matmul(jnp.where(kept, piece, jnp.zeros_like(piece)),
                                   tables[projection[0]][projection[1]])
            outputs.append(piece)
        slot_table = outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs)
        # made once: fused into the ids' gather, XLA would find each id's
        # tier and project its row per element
        slot_table = lax.optimization_barrier(slot_table)
        table = tables[self.fallback_buffer]
        if self.qr:
            parts = [lax.div(bucket, np.int32(self.remainder)),
                     lax.rem(bucket, np.int32(self.remainder))]
        else:
            parts = [bucket]
        rows = [p + start if start else p for p, start in zip(parts, self.fallback_starts)]
        gathered = table.at[rows[0] if len(rows) == 1 else jnp.concatenate(rows)].get(
            mode="promise_in_bounds")
        # both factors selected: the other factor's gradient of an id that
        # does not read the fallback is a select of zero, never 0 * inf
        gathered = jnp.where(jnp.tile(reads, len(rows))[:, None], gathered,
                             jnp.zeros_like(gathered))
        product = gathered if len(rows) == 1 else \
            gathered[:safe.shape[0]] * gathered[safe.shape[0]:]
        if self.fallback_projection is not None:
            b, part = self.fallback_projection
            product = jnp.matmul(product, tables[b][part])
        own = slot_table.at[safe].get(mode="promise_in_bounds")
        fallback = jnp.where(reads[:, None], product, jnp.zeros_like(product))
        return jnp.where(admitted[:, None], own, fallback), valid
