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


def write_scope():
    """Where the host path computes the written values: outside autograd
    (nothing differentiates through a write)."""
    return torch.no_grad()


def pinv(matrix):
    """Pseudo-inverse of a float32 matrix (singular values up to 1e-6 of
    the largest kept, as the graph's `_pinv`), in one call."""
    return torch.linalg.pinv(matrix, rtol=1e-6)

# `dynamic_batches` maps batches ahead in a thread (the trainer does not).
MAP_AHEAD = True


def install_write_step(model, layers):
    """Nothing to install: the layer's writes inside the step are in place."""
