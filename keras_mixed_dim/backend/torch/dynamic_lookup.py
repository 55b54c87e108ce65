"""PyTorch's own `DynamicEmbedding` lookup (PyTorch-only module).

The portable lookup (`DynamicEmbedding._vectors`) is some forty `keras.ops`
calls per feature, and autograd adds as many nodes again; on PyTorch's
eager step each costs its dispatch (Keras's conversions included) whatever
the batch, and each table's gather differentiates through
`embedding_dense_backward`, the slowest op of the step. Here the same
arithmetic is one `torch.autograd.Function`: its forward runs the gathers,
the selects and the projections' product in about 27 raw torch ops, and
its backward writes each variable's gradient directly, one `index_add_`
per variable (or, for a table whose `SparseRowOptimizer` armed this
backward pass, a sparse COO gradient of the rows read, as `take_rows`
gives: `keras_mixed_dim.backend.torch.sparse_rows`).

What an id reads is the portable path's, lane for lane: an id reads one
piece (its tier's row, or the fallback's), every piece's rows are gathered
for every id (a tier's row and the QR quotient share a lane of their
variable), and the pieces an id does not read are dropped by a select,
never a product (0 * inf is NaN).

A layer with few slots for its batch (at most `SLOTS_PER_ID` per id, the
small tables of a streaming budget) is looked up by its slot table instead
(`_SlotPlan`): every slot's output computed once, the fallback's for the
ids that read it, one gather; the same outputs (within float32 rounding;
a diverged projection reaches its own tier's ids alone, where the lanes'
product reaches every projected id) and gradients.
"""

import weakref

import numpy as np
import torch

from keras_mixed_dim.backend.torch import sparse_rows


def vectors(layer, safe, admitted, buckets):
    """`DynamicEmbedding._vectors` (the same contract) in raw torch.

    Args:
        layer: A built `DynamicEmbedding`.
        safe: int slots, clipped into range.
        admitted: bool, where the id reads its slot's row.
        buckets: int fallback buckets (out of range: no row).

    Returns:
        `(outputs, valid)`: `safe.shape + (output_dim,)` in the tables'
        dtype (float32) and bool
        `safe.shape`, where the bucket was in range.
    """
    lookup = _lookup_of(layer)
    tables = [variable.value for variable in layer.width_tables]
    shape = tuple(safe.shape)
    flat = [torch.as_tensor(x, device=tables[0].device).reshape(-1)
            for x in (safe, admitted, buckets)]
    if torch.compiler.is_compiling():
        # `torch.compile` (`jit_compile=True`) traces the same ops, with
        # `where` selects that autograd differentiates (no hand-written
        # backward: its pass-specific sparse gradients cannot be traced)
        outputs, valid, _ = lookup.forward(*flat, tables, select=_where)
    else:
        owners = tuple(_owner(v) for v in layer.width_tables)
        by_slot = _slot_plan_of(layer, owners, flat[0].shape[0], tables[0].device)
        if by_slot is not None:
            if torch.is_grad_enabled() and any(t.requires_grad for t in tables):
                outputs, valid = _SlotLookup.apply(by_slot, *flat, *tables)
            else:
                outputs, valid, _ = by_slot.forward(*flat, tables)
        elif torch.is_grad_enabled() and any(t.requires_grad for t in tables):
            outputs, valid = _Lookup.apply(lookup, owners, *flat, *tables)
        else:
            outputs, valid, _ = lookup.forward(*flat, tables)
    return outputs.reshape(shape + (lookup.output_dim,)), valid.reshape(shape)


def _owner(variable):
    """The weak reference to the table's `SparseRowOptimizer`, or None."""
    owner = getattr(variable, sparse_rows.OWNER_ATTRIBUTE, None)
    return owner if owner is not None and owner() is not None else None


# a built layer's layout never changes: its constants are made once
_LOOKUPS = weakref.WeakKeyDictionary()


def _lookup_of(layer):
    lookup = _LOOKUPS.get(layer)
    if lookup is None:
        lookup = _LOOKUPS[layer] = _Plan(layer)
    return lookup


class _Fallback:
    """Where a layer's fallback parts live, for both lookups: the QR
    quotient and remainder tables (`qr`), or the hashed table."""

    def __init__(self, layer):
        layout, plan = layer.layout, layer.plan
        self.output_dim = int(plan.output_dim)
        self.range = int(plan.fallback_range)
        self.qr = plan.fallback == "qr"
        names = ["fallback_quotient", "fallback_remainder"] if self.qr \
            else ["fallback_embeddings"]
        self.remainder = int(plan.fallback_tables[1]) if self.qr else None
        self.fallback_names = names
        self.fallback_starts = [int(layout.start[name]) for name in names]
        self.fallback_buffer = layout.buffer[names[0]]

    def fallback_rows(self, bucket):
        """The rows of int64 buckets `bucket` (in range) in each fallback
        part's variable: the QR quotient's and remainder's, or the hashed
        table's."""
        parts = [torch.div(bucket, self.remainder, rounding_mode="floor"),
                 torch.remainder(bucket, self.remainder)] if self.qr else [bucket]
        return [rows + start if start else rows
                for rows, start in zip(parts, self.fallback_starts)]


class _Plan(_Fallback):
    """A layer's lookup: its layout as constants, and the forward and
    backward arithmetic.

    Each variable holds one or more lanes (one gather per variable, the
    lanes stacked): a lane's rows are a fallback part's (`("fallback", i)`:
    the quotient, the remainder, or the hashed table) or a tier's
    (`("tier", t)`), and the first lane also carries the rows of the tiers
    that share it (an id reads at most one of them). `_vectors` builds the
    same lanes, in the same order."""

    def __init__(self, layer):
        super().__init__(layer)
        layout, plan = layer.layout, layer.plan
        offsets = layer.id_map.offsets
        self.num_tiers = num_tiers = layer.num_tiers
        self.bounds = np.asarray(offsets[1:-1], np.int64)
        # buffer -> [[base, [tiers that share the lane]], ...]
        self.lanes = {}
        for i, name in enumerate(self.fallback_names):
            self.lanes.setdefault(layout.buffer[name], []).append([("fallback", i), []])
        self.tier_buffer, self.shift, self.clip = [], [], []
        for t in range(num_tiers):
            name = f"tier_{t}_embeddings"
            b = layout.buffer[name]
            shift = int(layout.start[name]) - int(offsets[t])
            last = int(layer.width_tables[b].shape[0]) - 1
            self.tier_buffer.append(b)
            self.shift.append(shift)
            # a slot of another tier reads some row of the variable (masked);
            # clipped only where it could leave the variable (`_tier_rows`)
            self.clip.append((0 if shift < 0 else None,
                              last if layer.id_map.num_slots - 1 + shift > last else None))
            lanes = self.lanes.setdefault(b, [])
            if not lanes:
                lanes.append([("tier", t), []])
            else:
                lanes[0][1].append(t)
        self.projected = list(layer._projected_pieces)
        self.full = [g for g in range(num_tiers + 1) if g not in self.projected]
        # the pieces side by side, the projected ones first (the columns of
        # the product with their stacked projections), then the full-width
        # ones; `mask[p]` keeps the columns of piece `p` (none for `p =
        # num_tiers + 1`) as int32 -1 (kept) or 0 (dropped)
        widths = [*plan.tier_dims, plan.fallback_dim]
        self.order = self.projected + self.full
        self.columns, start = {}, 0
        for g in self.order:
            self.columns[g] = (start, start + int(widths[g]))
            start += int(widths[g])
        self.projected_width = sum(int(widths[g]) for g in self.projected)
        # with both kinds of piece, `output_dim` more columns keep the
        # projected product for the ids that read no full-width piece: a
        # full-width id's zero columns times a diverged projection are NaN,
        # where the portable path's select gives its piece alone
        self.guard = bool(self.full and self.projected)
        mask = np.zeros((num_tiers + 2, start), np.int32)
        for g, (lo, hi) in self.columns.items():
            mask[g, lo:hi] = -1
        self.mask = mask
        # (a table of its own: two contiguous gathers beat slices of one)
        self.guard_mask = np.zeros((num_tiers + 2, self.output_dim), np.int32)
        self.guard_mask[[g for g in range(num_tiers + 2) if g not in self.full]] = -1
        self.projection_buffer = layout.widths.index(self.output_dim)
        rows = np.asarray(layer._projection_rows, np.int64)
        # the projections are consecutive rows of their variable (each
        # follows its tier's table in the layout, and every part of width
        # `output_dim` after the first tier's table is a projection): a
        # slice, a view, where a gather would be an op forward and backward
        self.projection_rows = slice(int(rows[0]), int(rows[-1]) + 1) if rows.size else None
        assert rows.size == 0 or np.array_equal(rows, np.arange(rows[0], rows[-1] + 1)), rows
        self._constants = {}

    def constants(self, device, dtype):
        """The plan's tensors on `device`, the mask as the integers of
        `dtype`'s width (made once per device and dtype)."""
        found = self._constants.get((device, dtype))
        if found is None:
            found = self._constants[(device, dtype)] = {
                "bounds": torch.as_tensor(self.bounds, device=device),
                "mask": torch.as_tensor(self.mask, device=device).to(_BITS[dtype.itemsize]),
                "guard": torch.as_tensor(self.guard_mask, device=device).to(
                    _BITS[dtype.itemsize]),
            }
        return found

    def forward(self, safe, admitted, buckets, tables, select=None):
        """`(outputs, valid, saved)` of flat ids; `saved` is what the
        backward pass needs. `select(values, keep)`: how the pieces an id
        does not read are dropped (default `_select`)."""
        num_tiers, device = self.num_tiers, tables[0].device
        constants = self.constants(device, tables[0].dtype)
        # int64 rows: index_add_ (the backward pass) takes a path several
        # times slower with int32 indices
        safe, buckets = safe.long(), buckets.long()
        # a bucket out of range (padding: -1) is not its clipped self
        bucket = buckets.clamp(0, self.range - 1)
        valid = bucket == buckets
        # the piece each id reads: its tier's, the fallback's (`num_tiers`)
        # or none (`num_tiers + 1`)
        tier = torch.bucketize(safe, constants["bounds"], right=True) if num_tiers > 1 \
            else torch.zeros_like(safe)
        piece = torch.where(admitted, tier, torch.where(valid, num_tiers, num_tiers + 1))
        fallback = self.fallback_rows(bucket)
        rows, gathered = {}, {}
        for b, lanes in self.lanes.items():
            lane_rows = []
            for (kind, i), shared in lanes:
                lane = fallback[i] if kind == "fallback" else self._tier_rows(safe, i)
                for t in shared:
                    own = safe + self.shift[t] if self.shift[t] else safe
                    lane = torch.where(piece == t, own, lane)
                lane_rows.append(lane)
            rows[b] = lane_rows[0] if len(lane_rows) == 1 else torch.cat(lane_rows)
            gathered[b] = tables[b].index_select(0, rows[b]).view(
                len(lane_rows), safe.shape[0], tables[b].shape[1])
        select = select or _select
        keep = constants["mask"].index_select(0, piece)
        guard = constants["guard"].index_select(0, piece) if self.guard else None
        pieces = [gathered[self.tier_buffer[t]][0] for t in range(num_tiers)]
        first = gathered[self.fallback_buffer]
        if self.qr:
            # the quotient's lane holds a tier's row for that tier's ids:
            # selected before the product, so that where autograd
            # differentiates it (the compile path) a diverged tier row gives
            # the remainder row no 0 * inf gradient
            lo, hi = self.columns[num_tiers]
            pieces.append(select(first[0], keep[:, lo:hi]) * first[1])
        else:
            pieces.append(first[0])
        stacked = torch.cat([pieces[g] for g in self.order], dim=1)
        # the pieces an id does not read are other ids' rows: dropped by
        # clearing their bits (a select, bit for bit `where(keep, x, 0)`,
        # at the cost of a product): a product with a 0/1 mask would let
        # one inf or NaN row reach every id (0 * inf is NaN)
        masked = select(stacked, keep)
        split = self.projected_width
        outputs = None
        if self.projected:
            projections = tables[self.projection_buffer][self.projection_rows]
        for g in self.full:
            lo, hi = self.columns[g]
            outputs = masked[:, lo:hi] if outputs is None else outputs + masked[:, lo:hi]
        if self.guard:
            outputs = outputs + select(masked[:, :split] @ projections, guard)
        elif self.projected:
            outputs = masked[:, :split] @ projections if outputs is None else torch.addmm(
                outputs, masked[:, :split], projections)
        saved = {"rows": rows, "keep": keep, "guard": guard, "masked": masked, "fallback": first,
                 "shape": [(tuple(t.shape), t.dtype) for t in tables], "device": device,
                 "projections": projections if self.projected else None}
        return outputs.contiguous(), valid, saved

    def _tier_rows(self, safe, t):
        low, high = self.clip[t]
        rows = safe + self.shift[t] if self.shift[t] else safe
        return rows.clamp(low, high) if low is not None or high is not None else rows

    def backward(self, upstream, saved, needs, owners):
        """Each variable's gradient (None where `needs` is False): dense, or
        sparse COO rows where the table's optimizer armed this pass."""
        upstream = upstream.reshape(-1, self.output_dim)
        keep, split = saved["keep"], self.projected_width
        grads = {}   # piece -> gradient of its value (zero for the ids that do not read it)
        projection_grad = None
        if self.projected:
            inner = _select(upstream @ saved["projections"].T, keep[:, :split])
            for g in self.projected:
                lo, hi = self.columns[g]
                grads[g] = inner[:, lo:hi]
            if needs[self.projection_buffer]:
                # a full-width id's upstream does not reach the projections
                # (its zero columns times a NaN upstream would)
                reaching = _select(upstream, saved["guard"]) if self.guard else upstream
                projection_grad = saved["masked"][:, :split].T @ reaching
        for g in self.full:
            lo, hi = self.columns[g]
            grads[g] = _select(upstream, keep[:, lo:hi])
        fallback = grads[self.num_tiers]
        if self.qr:
            # each factor's gradient is the other factor's row times the
            # fallback's: selected too, since an id that reads its tier's
            # row holds that row in the quotient's lane (an inf there times
            # a zero gradient would be NaN in the remainder's gradient, a
            # row other ids read)
            first, (lo, hi) = saved["fallback"], self.columns[self.num_tiers]
            fallback = [_select(fallback * first[1], keep[:, lo:hi]),
                        _select(fallback * first[0], keep[:, lo:hi])]
        else:
            fallback = [fallback]
        results = []
        for b, (shape, dtype) in enumerate(saved["shape"]):
            if not needs[b]:
                results.append(None)
                continue
            values = []
            for (kind, i), shared in self.lanes.get(b, []):
                lane = fallback[i] if kind == "fallback" else grads[i]
                for t in shared:
                    # each id's gradient is nonzero in one piece only: the
                    # sum is the gradient of the piece it reads, exactly
                    lane = lane + grads[t]
                values.append(lane)
            rows = saved["rows"].get(b)
            values = values[0] if len(values) == 1 else torch.cat(values) if values else None
            extra = projection_grad if b == self.projection_buffer else None
            results.append(self._table_gradient(shape, dtype, rows, values, extra, owners[b],
                                                saved["device"]))
        return results

    def _table_gradient(self, shape, dtype, rows, values, extra, owner, device):
        optimizer = owner() if owner is not None else None
        if extra is not None:
            extra_rows = torch.arange(self.projection_rows.start, self.projection_rows.stop,
                                      device=device)
        if optimizer is not None and optimizer.armed_backward == sparse_rows._graph_task():
            indices, parts = [], []
            if rows is not None:
                indices.append(rows)
                parts.append(values)
            if extra is not None:
                indices.append(extra_rows)
                parts.append(extra)
            indices = indices[0] if len(indices) == 1 else torch.cat(indices)
            parts = parts[0] if len(parts) == 1 else torch.cat(parts)
            # (the rows are in range: clipped before the gather)
            return torch.sparse_coo_tensor(indices.reshape(1, -1), parts, shape,
                                           check_invariants=False)
        gradient = torch.zeros(shape, dtype=dtype, device=device)
        if rows is not None:
            gradient.index_add_(0, rows, values)
        if extra is not None:
            gradient[self.projection_rows] += extra
        return gradient


def _where(values, keep):
    """`_select` by `where`, which autograd differentiates."""
    return torch.where(keep != 0, values, 0.0)


# the integers as wide as a float of each width
_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _select(values, keep):
    """`where(keep, values, 0)` of float `values` and a `keep` of -1 (kept)
    or 0, integers of their width: the kept entries bit for bit (inf and
    NaN included), +0.0 elsewhere; one bitwise op, several times faster
    than `where` on the CPU."""
    return torch.bitwise_and(values.view(keep.dtype), keep).view(values.dtype)


class _Lookup(torch.autograd.Function):
    """The lookup of `_Plan`, whose backward writes the tables' gradients."""

    @staticmethod
    def forward(ctx, plan, owners, safe, admitted, buckets, *tables):
        outputs, valid, saved = plan.forward(safe, admitted, buckets, tables)
        # intermediate tensors (rows, masks, gathered rows), not inputs:
        # kept on the context, as torch allows for them
        ctx.plan, ctx.owners, ctx.saved = plan, owners, saved
        ctx.mark_non_differentiable(valid)
        return outputs, valid

    @staticmethod
    def backward(ctx, upstream, _):
        grads = ctx.plan.backward(upstream, ctx.saved, ctx.needs_input_grad[5:], ctx.owners)
        ctx.saved = None
        return (None, None, None, None, None, *grads)


# -- the lookup by slot table ------------------------------------------------

# The slot table (every slot's output vector, each tier's rows through its
# projection) is used where the layer has at most this many slots per id
# of the call: its cost grows with the slots, the lanes' with the ids.
SLOTS_PER_ID = 4

_SLOT_PLANS = weakref.WeakKeyDictionary()


def _slot_plan_of(layer, owners, count, device):
    """The layer's `_SlotPlan`, or None where the lanes of `_Plan` serve
    the call: a table whose `SparseRowOptimizer` may take sparse gradients
    (a step's cost must grow with the batch, not the capacity), more slots
    than `SLOTS_PER_ID` per id, or tables off the CPU (the fallback's
    readers, found by `nonzero`, would wait for the device each call)."""
    if any(owner is not None for owner in owners) or device.type != "cpu" or \
            layer.id_map.num_slots > SLOTS_PER_ID * count:
        return None
    plan = _SLOT_PLANS.get(layer)
    if plan is None:
        plan = _SLOT_PLANS[layer] = _SlotPlan(layer)
    return plan


class _SlotPlan(_Fallback):
    """A lookup of a layer with few slots for its batch: every slot's
    output (its tier's row through the tier's projection) is computed once,
    for all slots, and the fallback's vector only for the ids that read it
    (an eager step's shapes may follow the batch); one gather from these
    rows and a zero row gives each id the one it reads. Some thirty ops
    forward and backward, on tensors of `output_dim` or fewer columns, where
    `_Plan` gathers every piece for every id and selects.

    Backward, the gradient of each of those rows is one `index_add_` of the
    upstream; a slot's then goes through its tier's projection, of the rows
    some admitted id read only (an unread row gets a zero gradient and gives
    the projection none, as where rows are gathered: its `0 * inf` would be
    NaN); the fallback's rows get the readers' alone (another id's diverged
    fallback row never enters)."""

    def __init__(self, layer):
        super().__init__(layer)
        layout = layer.layout
        offsets = [int(o) for o in layer.id_map.offsets]
        self.num_slots = int(layer.id_map.num_slots)
        # each tier: (its rows, its projection's, its first slot)
        self.tiers = [(layout.locate(f"tier_{t}_embeddings"),
                       layout.locate(f"tier_{t}_projection"), offsets[t])
                      for t in range(layer.num_tiers)]
        assert offsets[-1] == self.num_slots and all(
            rows[1].stop - rows[1].start == offsets[t + 1] - offsets[t]
            for t, (rows, _, _) in enumerate(self.tiers)), offsets
        self.projected = any(projection is not None for _, projection, _ in self.tiers)
        self.fallback_projection = layout.locate("fallback_projection")
        self._zero_row = {}

    def forward(self, safe, admitted, buckets, tables):
        """`(outputs, valid, saved)` of flat ids, as `_Plan.forward`."""
        device, slots = safe.device, self.num_slots
        bits = _BITS[tables[0].dtype.itemsize]
        safe, buckets = safe.long(), buckets.long()
        # a bucket out of range (padding: -1) is not its clipped self
        bucket = buckets.clamp(0, self.range - 1)
        valid = bucket == buckets
        # the ids that read the fallback: only theirs is computed (an eager
        # step's shapes may follow the batch), so another id's diverged
        # fallback rows take no part, forward or backward
        readers = (valid & ~admitted).nonzero().squeeze(1)
        count = readers.shape[0]
        # each id's row of one table: the slots' outputs, the readers'
        # fallback vectors, a zero row (the ids that read nothing)
        index = torch.where(admitted, safe, slots + count).index_put_(
            (readers,), torch.arange(slots, slots + count, device=device))
        # rows read by some admitted id: the others take no part backward
        read = torch.zeros(slots + count + 1, dtype=bits, device=device).index_fill_(
            0, index, -1)[:slots, None] if self.projected else None
        vectors, pieces = [], []
        for (b, rows), projection, first in self.tiers:
            piece = tables[b][rows]
            if projection is None:
                vectors.append(piece)
                pieces.append(None)
            else:
                vectors.append(piece @ tables[projection[0]][projection[1]])
                # (a copy: a later call's row writes leave it as read)
                pieces.append(_select(piece, read[first:first + piece.shape[0]]))
        table, bucket = tables[self.fallback_buffer], bucket.index_select(0, readers)
        if self.qr:
            quotient, remainder = self.fallback_rows(bucket)
            pair = table.index_select(0, torch.cat([quotient, remainder])).view(
                2, count, table.shape[1])
            product = pair[0] * pair[1]
            # each factor's gradient is the other's row times the product's
            rows = torch.cat([remainder, quotient])
        else:
            rows, = self.fallback_rows(bucket)
            pair, product = None, table.index_select(0, rows)
        fallback = product
        if self.fallback_projection is not None:
            b, part = self.fallback_projection
            fallback = product @ tables[b][part]
        outputs = torch.cat([*vectors, fallback, self._zeros(fallback)]).index_select(0, index)
        saved = {"index": index, "count": count, "read": read, "pieces": pieces, "rows": rows,
                 "pair": pair, "product": product, "tables": tables}
        return outputs, valid, saved

    def _zeros(self, like):
        found = self._zero_row.get((like.device, like.dtype))
        if found is None:
            found = self._zero_row[(like.device, like.dtype)] = torch.zeros(
                (1, self.output_dim), dtype=like.dtype, device=like.device)
        return found

    def backward(self, upstream, saved, needs):
        """Each variable's dense gradient (None where `needs` is False)."""
        # (contiguous: `index_add_` of a strided source, a slice of the
        # upstream of a concatenation, costs more than the copy)
        upstream = upstream.reshape(-1, self.output_dim).contiguous()
        tables, read, slots = saved["tables"], saved["read"], self.num_slots
        grads = [torch.zeros(t.shape, dtype=t.dtype, device=t.device) if need else None
                 for t, need in zip(tables, needs)]
        # the gradient of each row of the forward's table: the slots', the
        # readers' fallback vectors', the zero row's (discarded)
        gathered = torch.zeros((slots + saved["count"] + 1, self.output_dim),
                               dtype=upstream.dtype, device=upstream.device).index_add_(
            0, saved["index"], upstream)
        slot_grad = gathered[:slots]
        for ((b, rows), projection, first), piece in zip(self.tiers, saved["pieces"]):
            slot_rows = slot_grad[first:first + rows.stop - rows.start]
            if projection is None:
                if needs[b]:
                    grads[b][rows] = slot_rows
                continue
            matrix = tables[projection[0]][projection[1]]
            if needs[b]:
                grads[b][rows] = _select(slot_rows @ matrix.T,
                                         read[first:first + piece.shape[0]])
            if needs[projection[0]]:
                grads[projection[0]][projection[1]] = piece.T @ slot_rows
        fallback = gathered[slots:-1]
        if self.fallback_projection is not None:
            b, part = self.fallback_projection
            if needs[b]:
                grads[b][part] = saved["product"].T @ fallback
            fallback = fallback @ tables[b][part].T
        b = self.fallback_buffer
        if needs[b]:
            pair = saved["pair"]
            values = fallback if pair is None else (fallback * pair).view(-1, pair.shape[2])
            grads[b].index_add_(0, saved["rows"], values)
        return grads


class _SlotLookup(torch.autograd.Function):
    """The lookup of `_SlotPlan`, whose backward writes the tables'
    gradients."""

    @staticmethod
    def forward(ctx, plan, safe, admitted, buckets, *tables):
        outputs, valid, saved = plan.forward(safe, admitted, buckets, tables)
        ctx.plan, ctx.saved = plan, saved
        ctx.mark_non_differentiable(valid)
        return outputs, valid

    @staticmethod
    def backward(ctx, upstream, _):
        grads = ctx.plan.backward(upstream, ctx.saved, ctx.needs_input_grad[4:])
        ctx.saved = None
        return (None, None, None, None, *grads)


def unpack(layer, packed):
    """`DynamicEmbedding.call`'s reading of its packed ids, in raw torch:
    `(safe, admitted, buckets)` as the portable prelude gives them (the
    same values; int64 where it gives int32). Some ten `keras.ops` calls
    there, each paying Keras's dispatch on an eager step; here as many
    torch ops, each a few microseconds.

    Args:
        layer: A built `DynamicEmbedding`.
        packed: int tensor `(..., 3)`: slot, tag, fallback bucket.

    Returns:
        `(safe, admitted, buckets)`: the slots clipped into range, where
        the id reads its slot's row (the slot in range, its tag the slot's
        and positive), the buckets; each `packed.shape[:-1]`.
    """
    if packed.dtype != torch.int32:
        # as the portable `ops.cast(inputs, "int32")`: wider ids wrap
        packed = packed.to(torch.int32)
    # int64 from here: the lookup indexes with int64 rows
    slot, tag, buckets = packed.long().unbind(-1)
    safe = slot.clamp(0, int(layer.id_map.num_slots) - 1)
    # (an int variable: no gradient, so no row optimizer takes part)
    tags = layer.slot_tags.value
    stored = tags.index_select(0, safe.reshape(-1).to(tags.device)).view(safe.shape)
    admitted = (safe == slot) & (stored == tag) & (tag > 0)
    return safe, admitted, buckets


# -- the layer's call without Keras's `__call__` -------------------------------

# the keyword arguments of `DynamicEmbedding.call`
_CALL_KEYWORDS = frozenset(("weights", "writes"))


def direct_call(layer, args, kwargs):
    """`layer(*args, **kwargs)` as `layer.call`, or None where Keras's
    `Layer.__call__` must run it.

    Inside a model's eager step (the call context of an outer call already
    open) a built layer's `__call__` adds nothing its `call` needs: no
    build, no argument conversion (off for this layer), no `training`
    argument, no mask (the layer supports none; an input with one goes
    through `__call__`, which warns). Its some two hundred microseconds of
    signature binding, scopes and tree walks per call are a tenth of the
    layer's share of a step. A mixed-precision model's autocast scope is
    cleared around the call, as `__call__` clears it for a layer with
    autocast off: the tables opt out of it (`TableLayer.add_weight`), but
    an optimizer's slots do not, and the row writes' torch ops would reset
    a float16 copy of them instead. Anything else (an unbuilt layer, a
    symbolic or stateless call, the outermost call, torch hooks,
    rematerialisation, a distribution, an activity regulariser, another
    argument) is left to `__call__`.
    """
    if _keras_scopes is None:
        return None
    global_state, in_stateless_scope, in_symbolic_scope, get_autocast_scope, \
        AutocastScope = _keras_scopes
    # Keras's private per-layer state: a Keras without it gets `__call__`
    context_args = getattr(layer, "_call_context_args", None)
    has_context_arg = getattr(layer, "_call_has_context_arg", None)
    if context_args is None or has_context_arg is None:
        return None
    if len(args) != 1 or not layer.built or any(
            name not in _CALL_KEYWORDS and (name not in context_args or
                                            has_context_arg.get(name, False))
            for name in kwargs):
        return None
    inputs = args[0]
    if type(inputs) is not torch.Tensor or getattr(inputs, "_keras_mask", None) is not None:
        return None
    if any(value is not None and type(value) is not torch.Tensor
           for name, value in kwargs.items() if name in _CALL_KEYWORDS):
        return None
    context = global_state.get_global_attribute("current_call_ctx")
    if context is None or \
            global_state.get_global_attribute("distribution") is not None or \
            in_symbolic_scope() or in_stateless_scope():
        return None
    if getattr(layer, "_remat_mode", None) or layer.activity_regularizer is not None or _hooked(layer):
        return None
    layer._called = True
    kwargs = dict(kwargs)
    for name in context_args:
        if name in kwargs:
            # as `__call__`: a context argument `call` does not take (the
            # functional model's `training`) is stashed for the layers
            # downstream, not passed
            context.set_value(name, kwargs.pop(name))
    scope = get_autocast_scope()
    if scope is not None and scope.dtype is not None:
        with AutocastScope(None):
            return layer.call(inputs, **kwargs)
    return layer.call(inputs, **kwargs)


def _scopes():
    """Keras's global state and scope tests `direct_call` reads (private
    modules: None where a Keras lacks them, and every call takes
    `__call__`)."""
    try:
        from keras.src.backend.common import global_state
        from keras.src.backend.common.stateless_scope import in_stateless_scope
        from keras.src.backend.common.symbolic_scope import in_symbolic_scope
        from keras.src.backend.common.variables import AutocastScope
        from keras.src.backend.common.variables import get_autocast_scope
    except ImportError:
        return None
    return (global_state, in_stateless_scope, in_symbolic_scope, get_autocast_scope,
            AutocastScope)


_keras_scopes = _scopes()


def _hooked(module):
    """Whether torch's `Module.__call__` would do more than `forward`: a
    forward or backward hook (the module's or a global one) would see the
    call, or `Module.compile` compiled it (`_call_impl`'s test)."""
    from torch.nn.modules import module as torch_module

    return bool(module._forward_hooks or module._forward_pre_hooks or
                module._backward_hooks or module._backward_pre_hooks or
                torch_module._global_forward_hooks or
                torch_module._global_forward_pre_hooks or
                torch_module._global_backward_hooks or
                torch_module._global_backward_pre_hooks or
                getattr(module, "_compiled_call_impl", None) is not None)
