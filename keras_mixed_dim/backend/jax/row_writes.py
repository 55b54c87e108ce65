"""Writing a few rows of a table variable (JAX).

JAX arrays are immutable: inside a step the write is a functional scatter,
which the train step `dynamic_batches` installs carries into the trainer's
state; between steps the table is rewritten from a host copy, because an
eager scatter or gather would compile once per number of rows.
"""

import numpy as np
from keras import ops


def assign_rows(variable, rows, values):
    """`variable[rows] = values` between steps, from a host copy."""
    table = np.array(variable.value)
    table[np.asarray(rows, np.int64)] = values
    variable.assign(table)


def write_rows(variable, rows, values):
    """`variable[rows] = values` with tensors, inside a traced step."""
    variable.assign(ops.scatter_update(variable.value, ops.expand_dims(rows, -1),
                                       ops.cast(values, variable.dtype)))


def read_rows(variable, rows):
    """Rows of a variable as numpy: a plain host copy."""
    return np.asarray(variable.value)[np.asarray(rows, np.int64)]


# The JAX trainer keeps its own copy of the tables during `fit`, so a write
# made by the layer would be lost; the installed train step applies them.
WRITES_IN_LAYER = False
