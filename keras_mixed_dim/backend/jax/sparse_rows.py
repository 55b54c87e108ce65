"""A JAX train step whose embedding-table gradients are rows, not tables.

`jax.grad` of a gather is a dense array of the table's shape, so Keras's
JAX `train_step` costs in proportion to the vocabulary even when an
optimizer then touches a few thousand rows. This step differentiates with
respect to the *gathered rows* instead: while it traces the forward pass,
`keras_mixed_dim.backend.take_rows` on a table returns
`stop_gradient(table[rows]) + delta`, where `delta` is a zero array of the
gathered block's shape and one of the differentiated arguments. The
gradient with respect to `delta` is then each looked-up row's gradient, and
`SparseRowOptimizer` scatters its update into the table (`RowGradient`).

Tables are still passed to `jax.value_and_grad` through an identity with a
custom VJP that sees symbolic zeros: if anything other than `take_rows`
reads a table (a regularizer, the MD layer's small head blocks, a
`keras.layers.Embedding`), its dense gradient is kept too, so no gradient
is ever dropped; when nothing does, the dense gradient is an unused zero
array that XLA removes.
"""

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
import keras

from keras_mixed_dim.backend.row_gradients import RowGradient

# The tap of the forward pass being traced (a stack: traces can nest).
_TAPS = []


class _RowTap:
    """Redirects `take_rows` on the tables being differentiated by rows."""

    def __init__(self, positions, deltas=None):
        self.positions = positions  # id(variable) -> index in trainable list
        self.deltas = deltas
        self.calls = []  # (position, rows) per lookup, in trace order
        self.shapes = []

    def take(self, table, rows):
        position = self.positions.get(id(table))
        if position is None:
            return None
        gathered = jnp.take(jax.lax.stop_gradient(table.value), rows, axis=0)
        index = len(self.calls)
        self.calls.append((position, rows))
        if self.deltas is None:
            self.shapes.append(jax.ShapeDtypeStruct(gathered.shape, gathered.dtype))
            return gathered
        if index >= len(self.deltas) or self.deltas[index].shape != gathered.shape:
            raise RuntimeError(
                "The model's table lookups differ between two traces of the same "
                "train step; the sparse row step needs a deterministic forward pass.")
        return gathered + self.deltas[index]


def take_rows(table, rows):
    """The tapped lookup when a sparse step is tracing, else `None`."""
    if not _TAPS:
        return None
    return _TAPS[-1].take(table, rows)


def _guard(value, position, dense_reads):
    """Identity on a table's value that records whether its cotangent is
    more than a symbolic zero (the table was read other than by rows)."""

    @jax.custom_vjp
    def identity(table):
        return table

    def forward(table):
        return table.value, None

    def backward(_, cotangent):
        if isinstance(cotangent, SymbolicZero):
            return (jnp.zeros(cotangent.aval.shape, cotangent.aval.dtype),)
        dense_reads.add(position)
        return (cotangent,)

    identity.defvjp(forward, backward, symbolic_zeros=True)
    return identity(value)


def train_step(model, state, data, keras_step):
    """`JAXTrainer.train_step` with row gradients for the optimizer's tables.

    Used when the model's optimizer takes `RowGradient`s (a
    `SparseRowOptimizer`) and the forward pass looks a table up through
    `take_rows`; otherwise `keras_step(state, data)` (the model's own step).
    """
    optimizer = model.optimizer
    if not getattr(optimizer, "accepts_row_gradients", False):
        return keras_step(state, data)
    tables = {id(v) for v in optimizer.table_variables}
    positions = {id(v): i for i, v in enumerate(model.trainable_variables)
                 if id(v) in tables}
    if not positions:
        return keras_step(state, data)
    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    dense_reads = set()

    def forward(trainable_values, tap):
        values = list(trainable_values)
        for position in positions.values():
            values[position] = _guard(values[position], position, dense_reads)
        _TAPS.append(tap)
        try:
            loss, aux = model.compute_loss_and_updates(
                values, non_trainable, metrics_values, x, y, sample_weight,
                training=True, optimizer_variables=optimizer_values)
        finally:
            _TAPS.pop()
        return loss, (aux, [rows for _, rows in tap.calls])

    # First trace: which tables the forward pass gathers, and the shapes.
    recorder = _RowTap(positions)
    jax.eval_shape(lambda values: forward(values, recorder)[0], trainable)
    if not recorder.calls:
        return keras_step(state, data)
    lookups = [position for position, _ in recorder.calls]

    def loss_fn(trainable_values, deltas):
        return forward(trainable_values, _RowTap(positions, deltas))

    deltas = [jnp.zeros(s.shape, s.dtype) for s in recorder.shapes]
    (_, (aux, looked_up)), (grads, row_grads) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(trainable, deltas)
    unscaled_loss, y_pred, non_trainable, metrics_values = aux

    grads = list(grads)
    for position in positions.values():
        tail = tuple(trainable[position].shape[1:])
        parts = [(rows, grad) for p, rows, grad in zip(lookups, looked_up, row_grads)
                 if p == position]
        dense = grads[position] if position in dense_reads else None
        if parts:
            grads[position] = RowGradient(
                jnp.concatenate([jnp.reshape(rows, (-1,)) for rows, _ in parts]),
                jnp.concatenate([jnp.reshape(g, (-1,) + tail) for _, g in parts]),
                dense)
        else:
            grads[position] = None if dense is None else RowGradient(dense=dense)

    trainable, optimizer_values = optimizer.stateless_apply(
        optimizer_values, grads, trainable)
    logs, metrics_values = model._update_metrics_variables(
        metrics_values, unscaled_loss, x, y, y_pred, sample_weight)
    return logs, (trainable, non_trainable, optimizer_values, metrics_values)


# -- row updates inside `SparseRowOptimizer` (static shapes for `jax.jit`) ----

def unique_rows(indices, values, num_rows):
    """`(rows, summed)`: distinct row ids, each with its summed gradient.

    Static shapes: `rows` has one slot per index; the unused slots hold
    `num_rows` (out of range), with a zero gradient, and are dropped by
    `scatter_rows`.
    """
    indices = jnp.reshape(indices, (-1,))
    size = indices.shape[0]
    rows, inverse = jnp.unique(indices, size=size, fill_value=num_rows,
                               return_inverse=True)
    summed = jax.ops.segment_sum(values, jnp.reshape(inverse, (-1,)),
                                 num_segments=size)
    return rows, summed


def gather_rows(variable, rows):
    """The current values of `rows` (zeros for the out-of-range padding)."""
    return jnp.take(variable.value, rows, axis=0, mode="fill", fill_value=0)


def scatter_rows(variable, rows, values):
    """Writes `values` to `rows` (padding rows dropped)."""
    variable.assign(variable.value.at[rows].set(
        values.astype(variable.value.dtype), mode="drop"))
