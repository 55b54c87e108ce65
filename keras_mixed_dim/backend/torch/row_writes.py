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

# `dynamic_batches` maps batches ahead in a thread (the trainer does not).
MAP_AHEAD = True


def install_write_step(model, layers):
    """Nothing to install: the layer's writes inside the step are in place."""
