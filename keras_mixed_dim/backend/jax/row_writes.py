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


# `dynamic_batches` maps batches ahead in a thread (the JAX trainer does
# not).
MAP_AHEAD = True

# The JAX trainer keeps its own copy of the tables during `fit`, so a write
# made by the layer would be lost; the installed train step applies them.
WRITES_IN_LAYER = False


# The writes reach the layer as symbolic tensors inside a traced step.
CONCRETE_WRITES = False


def install_write_step(model, layers):
    """Wraps `model.train_step` (JAX) so that it applies the batch's row
    writes to the state before the original step runs: writes made inside
    the layer's stateless call would be dropped (only non-trainable updates
    come back from it), and outside the step the trainer's state is not the
    variables'."""
    from keras.src.backend.common.stateless_scope import StatelessScope
    from keras.src.trainers.data_adapters import data_adapter_utils

    pairs = dict(getattr(model, "_dynamic_write_layers", {}))
    pairs.update(layers)
    for layer in pairs.values():
        layer._write_optimizer_ref.jax_step = True
    if getattr(model, "_dynamic_write_layers", None) is not None:
        model._dynamic_write_layers.update(layers)
        return
    object.__setattr__(model, "_dynamic_write_layers", pairs)
    original = model.train_step

    def train_step(state, data):
        trainable, non_trainable, optimizer_variables, metrics = state
        x, _, _ = data_adapter_utils.unpack_x_y_sample_weight(data)
        groups = ((model.trainable_variables, trainable),
                  (model.non_trainable_variables, non_trainable),
                  (model.optimizer.variables, optimizer_variables))
        mapping = [pair for refs, values in groups for pair in zip(refs, values)]
        with StatelessScope(state_mapping=mapping) as scope:
            for name, layer in model._dynamic_write_layers.items():
                if name + "_writes" in x:
                    layer._apply_writes(x[name + "_writes"])
        trainable, non_trainable, optimizer_variables = (
            [scope.get_current_value(r) for r in refs] for refs, _ in groups)
        return original((trainable, non_trainable, optimizer_variables, metrics), data)

    object.__setattr__(model, "train_step", train_step)
    model.train_function = None
