"""JAX: a train step whose embedding-table gradients are rows, not tables.

`jax.grad` of a gather is an array of the table's shape, so Keras's JAX
`train_step` costs in proportion to the vocabulary even when an optimizer
then touches a few thousand rows. `train_step` here differentiates with
respect to the *gathered rows* instead: while it traces the forward pass,
`keras_mixed_dim.backend.take_rows` on a table returns
`stop_gradient(table[rows]) + delta`, where `delta` is a zero array of the
gathered block's shape and one of the differentiated arguments. The
gradient with respect to `delta` is then each looked-up row's gradient, and
`SparseRowOptimizer` scatters its update into the table (`RowGradient`).

Why not inside Keras's own step, in the lookup's backward (as on PyTorch)?
Keras 3.15's `JAXTrainer.train_step` differentiates
`compute_loss_and_updates` with respect to the trainable variables only, so
a lookup's custom VJP must return a cotangent of the table's shape (a
table-sized array each step), and it cannot reach the optimizer's slots,
iteration or loss scale: the optimizer variables are not mapped in the
forward pass (a read there is the value when the step was traced, a
constant of the compiled step). The one way a backward can move a table is
`overwrite_with_gradient` (return the new table as the "gradient", as
keras-rs's JAX `DistributedEmbedding` does), which would apply the update
before the optimizer sees any other gradient:
`global_clipnorm` (all gradients' norm), a `LossScaleOptimizer`'s unscaling
and skipped non-finite steps, per-table `clipnorm` of a table looked up
twice and the sum of two lookups' gradients (JAX adds the cotangents, so
two "new tables" would add up) cannot be honoured that way, and the slots
would have to move from the optimizer into the layers, so checkpoints of
this design would no longer load. Hence a step of its own:
`keras_mixed_dim.models.IdSafeModel` (the package's models) runs it,
`sparse_row_value_and_grad` gives a user's own `train_step` the same
gradients, and a plain `keras.Model` keeps Keras's step and the optimizer's
dense-gradient fallback, which warns.

Tables are still passed to `jax.value_and_grad` through an identity with a
custom VJP that sees symbolic zeros: if anything other than `take_rows`
reads a table (a regularizer, the MD layer's small head blocks, a
`keras.layers.Embedding`), its dense gradient is kept too, so no gradient
is ever dropped; when nothing does, the dense gradient is an unused zero
array that XLA removes.

The tap that redirects `take_rows` is an attribute of each table variable,
set only while the step traces its forward pass: this module holds no
state.
"""

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
import keras

from keras_mixed_dim.backend.row_gradients import RowGradient

# The attribute of a table variable holding the tap of the trace under way.
TAP_ATTRIBUTE = "_sparse_row_tap"


class _RowTap:
    """Redirects `take_rows` on the tables being differentiated by rows."""

    def __init__(self, positions, deltas=None):
        self.positions = positions  # id(variable) -> index in trainable list
        self.deltas = deltas
        self.calls = []  # (position, rows) per lookup, in trace order
        self.shapes = []

    def take(self, table, rows):
        position = self.positions[id(table)]
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
    """The tapped lookup while a row step traces, else `None`."""
    tap = getattr(table, TAP_ATTRIBUTE, None)
    if tap is None:
        return None
    return tap.take(table, rows)


class _Tapped:
    """Sets `tap` on the tables for the duration of a trace."""

    def __init__(self, tables, tap):
        self.tables, self.tap = tables, tap

    def __enter__(self):
        busy = [table.path for table in self.tables
                if getattr(table, TAP_ATTRIBUTE, None) is not None]
        # checked before any tap is set: `__exit__` does not run when
        # `__enter__` raises, so a tap set here would outlive the error
        if busy:
            raise RuntimeError(
                f"The table {busy[0]!r} is already being traced by another "
                "row step (a row step inside a row step's forward pass).")
        for table in self.tables:
            setattr(table, TAP_ATTRIBUTE, self.tap)

    def __exit__(self, *unused):
        for table in self.tables:
            setattr(table, TAP_ATTRIBUTE, None)


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


def value_and_grad(model):
    """`jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)`
    whose gradients of the optimizer's tables are `RowGradient`s.

    Returns a function of `compute_loss_and_updates`' arguments returning
    `((loss, aux), grads)`. A table the forward pass does not look up gets
    `None` (or `RowGradient(dense=...)` when something reads it whole).
    """
    grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)

    def row_grad_fn(trainable, non_trainable, metrics_values, x, y=None,
                    sample_weight=None, training=True, optimizer_variables=None):
        optimizer = model.optimizer
        tables = (optimizer.table_variables
                  if getattr(optimizer, "accepts_row_gradients", False) else [])
        table_ids = {id(v) for v in tables}
        positions = {id(v): i for i, v in enumerate(model.trainable_variables)
                     if id(v) in table_ids}
        tables = [v for v in tables if id(v) in positions]
        if not positions:
            return grad_fn(trainable, non_trainable, metrics_values, x, y,
                           sample_weight, training=training,
                           optimizer_variables=optimizer_variables)
        dense_reads = set()

        def forward(trainable_values, tap):
            values = list(trainable_values)
            for position in positions.values():
                values[position] = _guard(values[position], position, dense_reads)
            with _Tapped(tables, tap):
                loss, aux = model.compute_loss_and_updates(
                    values, non_trainable, metrics_values, x, y, sample_weight,
                    training=training, optimizer_variables=optimizer_variables)
            return loss, (aux, [rows for _, rows in tap.calls])

        # First trace: which tables the forward pass gathers, and the shapes.
        recorder = _RowTap(positions)
        jax.eval_shape(lambda values: forward(values, recorder)[0], trainable)
        if not recorder.calls:
            return grad_fn(trainable, non_trainable, metrics_values, x, y,
                           sample_weight, training=training,
                           optimizer_variables=optimizer_variables)
        lookups = [position for position, _ in recorder.calls]

        def loss_fn(trainable_values, deltas):
            return forward(trainable_values, _RowTap(positions, deltas))

        deltas = [jnp.zeros(s.shape, s.dtype) for s in recorder.shapes]
        (loss, (aux, looked_up)), (grads, row_grads) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(trainable, deltas)
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
        return (loss, aux), grads

    return row_grad_fn


def train_step(model, state, data):
    """`JAXTrainer.train_step` with `value_and_grad`'s row gradients."""
    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    (_, aux), grads = value_and_grad(model)(
        trainable, non_trainable, metrics_values, x, y, sample_weight,
        training=True, optimizer_variables=optimizer_values)
    unscaled_loss, y_pred, non_trainable, metrics_values = aux
    trainable, optimizer_values = model.optimizer.stateless_apply(
        optimizer_values, grads, trainable)
    # (Keras's own metric update, the one private call: there is no public
    # stateless equivalent that also updates the loss tracker)
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


def scatter_sub_rows(variable, indices, values):
    """Subtracts `values` from rows `indices`; duplicates accumulate (plain
    SGD needs no `unique_rows`)."""
    variable.assign(variable.value.at[jnp.reshape(indices, (-1,))].add(
        -values.astype(variable.value.dtype), mode="drop"))
