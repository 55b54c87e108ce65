"""Writing a few rows of a table variable in place (PyTorch).

`DynamicEmbedding` re-initialises and moves rows between training steps;
`assign` of a scattered copy would rewrite the whole table each time.
"""

import numpy as np
import torch


def assign_rows(variable, rows, values):
    """`variable[rows] = values` in place, outside autograd."""
    tensor = variable.value
    with torch.no_grad():
        tensor[torch.as_tensor(np.asarray(rows, np.int64), device=tensor.device)] = (
            torch.as_tensor(np.asarray(values), dtype=tensor.dtype, device=tensor.device))


def write_rows(variable, rows, values):
    """`variable[rows] = values` in place with tensors, inside a step,
    outside autograd (duplicate rows must carry equal values)."""
    tensor = variable.value
    with torch.no_grad():
        tensor.index_copy_(0, rows.to(torch.int64), values.to(tensor.dtype))


def read_rows(variable, rows):
    """Rows of a variable as numpy, gathering only those rows."""
    from keras import ops

    from keras_mixed_dim.backend import take_rows

    rows = np.asarray(rows, np.int64)
    return ops.convert_to_numpy(take_rows(variable, ops.convert_to_tensor(
        rows.astype(np.int32))))


# A step's row writes happen where the layer makes them, in place.
WRITES_IN_LAYER = True

# The step runs eagerly: the layer sees the batch's writes as a concrete
# tensor, so it picks the entries that write on the host (`concrete_writes`)
# and a batch that writes nothing costs no tensor op.
CONCRETE_WRITES = True


def concrete_writes(writes):
    """The batch's writes as numpy, or None where the layer keeps its graph
    path: a symbolic call (shape inference, whose placeholder writes are
    not the batch's) and a stateless scope."""
    from keras.src.backend.common.stateless_scope import in_stateless_scope
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope

    if in_symbolic_scope() or in_stateless_scope():
        return None
    if isinstance(writes, torch.Tensor):
        if writes.device.type == "meta":
            return None
        return writes.detach().cpu().numpy()
    return np.asarray(writes)


def pinv(matrix):
    """Pseudo-inverse of a float matrix (singular values up to 1e-6 of
    the largest kept, as the graph's `_pinv`), in one call; a single row
    `p` in closed form, `p.T / (p . p)` (zeros for p = 0), as the graph's
    `_tier_pinv` (an SVD costs several times more). A diverged (inf or
    NaN) matrix gives NaN, as `numpy_pinv` (the SVD would raise)."""
    if not bool(torch.isfinite(matrix).all()):
        # the rows written through a diverged projection are NaN on every
        # device (the CPU's numpy writes), never a LinAlgError mid-training
        return torch.full(matrix.shape[::-1], float("nan"), dtype=matrix.dtype,
                          device=matrix.device)
    if matrix.shape[0] == 1:
        norm = float((matrix * matrix).sum())
        return matrix.T * (1.0 / norm if norm > 0 else 0.0)
    # (in float32: `linalg.pinv` refuses half-precision tables' projections)
    return torch.linalg.pinv(matrix.float(), rtol=1e-6).to(matrix.dtype)


# CPU tensors' writes run in numpy on their memory (`_numpy_writes`); the
# torch ops below serve other devices (False: they serve every device).
NUMPY_WRITES = True

# the table dtypes numpy holds (`.numpy()` of a bfloat16 tensor raises): a
# layer of another dtype is written by the torch ops, on the CPU too
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def host_writes(layer, slots, sources, buckets, tags, bounds, slots_of, initial):
    """`DynamicEmbedding._host_writes`'s writes, outside autograd, in place.

    Args:
        layer: A built `DynamicEmbedding`.
        slots: int numpy slots written, ascending (hence tier by tier).
        sources, buckets: Their source slots (-1: the fallback's vector)
            and fallback buckets (`source_vectors`).
        tags: Their new tags.
        bounds: `slots[bounds[t]:bounds[t + 1]]` are tier `t`'s.
        slots_of: A variable -> the optimizer's slot variables of it.
        initial: A slot -> the value it starts from at a reused row (a
            number, or a function of the row's new weights, numpy in and
            out: `keras_mixed_dim.layers.slots.slot_initial_value`).
    """
    table = layer.width_tables[0].value
    if NUMPY_WRITES and table.device.type == "cpu" and table.dtype in _NUMPY_FLOATS:
        _numpy_writes(layer, slots, sources, buckets, tags, bounds, slots_of, initial)
        return
    with torch.no_grad():
        # every source's vector, before any row is written
        vectors = source_vectors(layer, sources, buckets)
        device = vectors.device
        for entries, b, rows, name in _tier_writes(layer, slots, bounds):
            mapped = vectors[entries]
            projection = _part(layer, name)
            if projection is not None:
                # least squares through the tier's projection
                mapped = mapped @ pinv(projection)
            buffer = layer.width_tables[b]
            rows = _index(rows, device)
            buffer.value.index_copy_(0, rows, mapped)
            for slot in slots_of(buffer):
                fill = initial(slot)
                # the slot's own tensor: an optimizer's slots do not opt out
                # of autocasting, and `.value` under the autocast scope Keras
                # opens around a mixed-precision layer is a float16 copy
                tensor = slot._value
                if callable(fill):
                    fill = np.asarray(fill(mapped.cpu().numpy()), slot.dtype)
                    tensor.index_copy_(0, rows, torch.as_tensor(fill, device=device))
                else:
                    tensor.index_fill_(0, rows, fill)
        layer.slot_tags.value.index_copy_(0, _index(slots, device), torch.as_tensor(
            tags, dtype=layer.slot_tags.value.dtype, device=device))


def _tier_writes(layer, slots, bounds):
    """Each written tier's `(entries, variable, rows, projection)`, for both
    write paths: its write entries (a slice of `slots`), the variable its
    table lives in, the rows written there (numpy) and its projection's
    part name."""
    layout, offsets = layer.layout, layer.id_map.offsets
    for t in range(layer.num_tiers):
        lo, hi = bounds[t], bounds[t + 1]
        if lo == hi:
            continue
        name = f"tier_{t}_embeddings"
        rows = slots[lo:hi] + (int(layout.start[name]) - int(offsets[t]))
        yield slice(lo, hi), layout.buffer[name], rows, f"tier_{t}_projection"


def _numpy_writes(layer, slots, sources, buckets, tags, bounds, slots_of, initial):
    """`host_writes` of CPU tensors, in numpy on their memory (`.numpy()`
    of a CPU tensor shares it): a written batch's few rows cost numpy's
    microseconds per op, where each torch op pays its dispatch (and an SVD
    per written tier, `numpy_pinv`, several times that). Outside autograd
    as `host_writes`' `no_grad`: the rows are written before the step's
    forward pass reads them, and what a lookup keeps for its backward pass
    is its own copy of the rows it read (written rows are never views a
    backward pass reads; numpy's writes leave the tensors' version counters
    as they are)."""
    arrays = [_numpy(variable) for variable in layer.width_tables]
    # every source's vector, before any row is written
    vectors = _numpy_source_vectors(layer, arrays, sources, buckets)
    for entries, b, rows, name in _tier_writes(layer, slots, bounds):
        mapped = vectors[entries]
        projection = layer.layout.view(arrays, name)
        if projection is not None:
            # least squares through the tier's projection
            mapped = mapped @ numpy_pinv(projection)
        arrays[b][rows] = mapped
        for slot in slots_of(layer.width_tables[b]):
            fill = initial(slot)
            _numpy(slot)[rows] = fill(mapped) if callable(fill) else fill
    _numpy(layer.slot_tags)[slots] = tags


def _numpy(variable):
    """A variable's memory as a numpy array (a CPU tensor's), made once per
    tensor and kept on it: `.value` and `.numpy()` cost microseconds each,
    some ten times per written batch. The variable's own tensor
    (`_value`), never a copy: `.value` would give an autocast copy under a
    mixed-precision scope (the writes run outside any stateless scope:
    `concrete_writes`); a tensor whose memory moved (`.data` set) gets a
    new view."""
    tensor = variable._value
    kept = getattr(tensor, _VIEW_ATTRIBUTE, None)
    pointer = tensor.data_ptr()
    if kept is None or kept[0] != pointer or kept[1].shape != tensor.shape:
        kept = _View((pointer, tensor.detach().numpy()))
        setattr(tensor, _VIEW_ATTRIBUTE, kept)
    return kept[1]


_VIEW_ATTRIBUTE = "_keras_mixed_dim_numpy_view"


class _View(tuple):
    """`(pointer, numpy view)` kept on a tensor, never copied with it: a
    tensor pickled with its attributes (`torch.save` of a whole model,
    `copy.deepcopy`) would otherwise carry a second copy of its values, and
    a loaded one a standalone array under a pointer its new memory could
    happen to have (writes into the array, not the tensor)."""

    __slots__ = ()

    def __reduce__(self):
        return type(None), ()


def numpy_pinv(matrix):
    """`pinv` of a float numpy matrix `(k, n)`, `k <= n`, in numpy: a
    single row in closed form, else `matrix.T @ pinv(matrix @ matrix.T)`,
    the small Gram matrix's pseudo-inverse from its eigenvalues (float64:
    they are the squared singular values, so the cut at 1e-6 of the largest
    singular value is the cut at 1e-12 of the largest eigenvalue). Exactly
    the pseudo-inverse; an SVD of the matrix (`np.linalg.pinv`) costs
    several times more in a training step."""
    if not np.isfinite(matrix).all():
        # a diverged projection: the rows written through it are NaN (its
        # tier's ids read NaN through it whatever their rows)
        return np.full(matrix.shape[::-1], np.nan, matrix.dtype)
    if matrix.shape[0] == 1:
        norm = float((matrix * matrix).sum())
        return matrix.T * matrix.dtype.type(1.0 / norm if norm > 0 else 0.0)
    wide = matrix.astype(np.float64)
    values, vectors = np.linalg.eigh(wide @ wide.T)
    kept = values > 1e-12 * values[-1]
    vectors = vectors[:, kept]
    return (wide.T @ ((vectors / values[kept]) @ vectors.T)).astype(matrix.dtype)


def _source_reads(layer, sources, buckets):
    """What each group of write entries reads, for `source_vectors` (torch)
    and `_numpy_source_vectors` alike: `(at, buffer, rows, projection)` per
    group, the entries `at` read rows `rows` (`(1, n)`, or `(2, n)` for the
    QR fallback's quotient and remainder rows, whose product is the
    vector; both in one variable) of variable `buffer`, then part
    `projection` (None read as it is, where the layer lacks it). Entries
    in no group (a bucket out of range) read zeros."""
    layout, plan, offsets = layer.layout, layer.plan, layer.id_map.offsets
    stored = sources >= 0
    if stored.any():
        tiers = np.searchsorted(offsets[1:], sources, side="right")
        for t in np.unique(tiers[stored]).tolist():
            at = np.flatnonzero(stored & (tiers == t))
            name = f"tier_{t}_embeddings"
            rows = sources[at] + (int(layout.start[name]) - int(offsets[t]))
            yield at, layout.buffer[name], rows[None], f"tier_{t}_projection"
    fallback = ~stored & (buckets >= 0) & (buckets < plan.fallback_range)
    if fallback.any():
        at = np.flatnonzero(fallback)
        bucket = buckets[at]
        if plan.fallback == "qr":
            remainder = plan.fallback_tables[1]
            rows = np.stack([bucket // remainder + layout.start["fallback_quotient"],
                             bucket % remainder + layout.start["fallback_remainder"]])
            yield at, layout.buffer["fallback_quotient"], rows, "fallback_projection"
        else:
            rows = bucket + layout.start["fallback_embeddings"]
            yield at, layout.buffer["fallback_embeddings"], rows[None], "fallback_projection"


def _numpy_source_vectors(layer, arrays, sources, buckets):
    """`source_vectors` in numpy, of `arrays` (the width tables' memory)."""
    result = np.zeros((len(sources), layer.output_dim), arrays[0].dtype)
    for at, buffer, rows, name in _source_reads(layer, sources, buckets):
        read = arrays[buffer][rows]
        vectors = read[0] if len(read) == 1 else read[0] * read[1]
        projection = layer.layout.view(arrays, name)
        result[at] = vectors if projection is None else vectors @ projection
    return result


def source_vectors(layer, sources, buckets):
    """The source vectors of a step's row writes (`DynamicEmbedding._host_writes`),
    computed as each entry needs, outside autograd: a slot's row through
    its tier's projection where `sources` names a slot, else the fallback's
    vector of `buckets` (QR: quotient row times remainder row, then the
    fallback's projection; zeros for a bucket out of range). What the
    layer's lookup gives these entries, without its gathers of every piece
    for every entry.

    Args:
        layer: A built `DynamicEmbedding`.
        sources: int numpy source slots, -1 where the entry reads the
            fallback.
        buckets: int numpy fallback buckets of the entries.

    Returns:
        float32 tensor `(len(sources), output_dim)`.
    """
    tables = [variable.value for variable in layer.width_tables]
    device, count = tables[0].device, len(sources)
    parts = []   # (positions, vectors)
    for at, buffer, rows, name in _source_reads(layer, sources, buckets):
        # the QR pair in one gather
        read = tables[buffer].index_select(0, _index(rows.ravel(), device)).view(
            len(rows), at.size, -1)
        parts.append((at, _projected(layer, name, read[0] if len(read) == 1
                                     else read[0] * read[1])))
    if len(parts) == 1 and parts[0][0].size == count:
        return parts[0][1]
    result = torch.zeros((count, layer.output_dim), dtype=tables[0].dtype, device=device)
    for at, vectors in parts:
        result.index_copy_(0, _index(at, device), vectors)
    return result


def _index(rows, device):
    return torch.as_tensor(np.asarray(rows, np.int64), device=device)


def _part(layer, name):
    """Part `name` of the layer's variables as a view, or None for a part
    the layer lacks."""
    return layer.layout.view([variable.value for variable in layer.width_tables], name)


def _projected(layer, name, vectors):
    """`vectors` through part `name` (a projection), or as they are where
    the layer has no such part (a full-width piece)."""
    projection = _part(layer, name)
    return vectors if projection is None else vectors @ projection

# `dynamic_batches` maps batches ahead in a thread (the trainer does not).
MAP_AHEAD = True


def install_write_step(model, layers):
    """Nothing to install: the layer's writes inside the step are in place."""
