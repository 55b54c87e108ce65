"""PyTorch: a table lookup whose backward gives the table a sparse gradient.

Autograd of an index into a table accumulates a dense gradient of the
table's shape, so a step would cost in proportion to the vocabulary. Here
`keras_mixed_dim.backend.take_rows` on a table that a `SparseRowOptimizer`
updates is a `torch.autograd.Function` (`_RowLookup`): its forward gathers
the rows, its backward hands the table a sparse COO gradient (the looked-up
rows and their gradients, as `torch.nn.Embedding(sparse=True)` does). The
gradient lives in the table's `.grad` like any other: autograd adds up two
lookups of one table and a dense read of it (a regularizer, the MD layer's
small head blocks), `zero_grad()` clears it, and Keras's own
`TorchTrainer.train_step` (or a user's) hands it to the optimizer, which
updates those rows only.

Only the backward pass of a loss that the table's `SparseRowOptimizer`
scaled (`optimizer.scale_loss(loss)`, which Keras's train step calls
before `backward()`) gets sparse gradients; any other backward pass gets
Keras's dense gradient. That keeps every other consumer of `.grad`
working: a `LossScaleOptimizer` around the optimizer (it scales the loss
itself and checks gradients with ops that sparse tensors lack), `model.fit`
with another optimizer after a recompile, a gradient computed for
inspection. The arming is scoped to that one backward pass, not to "the
next backward": `scale_loss` wraps the loss in `_ArmRowStep`, whose
backward (the first node of the loss's pass) records the pass's autograd
graph task on the optimizer, and a lookup's backward gives a sparse
gradient only inside that same task. A scaled loss never backpropagated
(computed for logging), or an error between `backward()` and the
optimizer's `apply`, then cannot leave a later, unrelated backward pass
with sparse `.grad`s. The state is the optimizer's (`armed_backward`) and
the table's (a weak reference to its optimizer); this module holds none.
"""

import weakref

import torch

# The attribute of a table variable holding a weak reference to the
# SparseRowOptimizer that updates it (set in its `build`).
OWNER_ATTRIBUTE = "_sparse_row_optimizer"


def _graph_task():
    """The running backward pass's autograd graph task (unique per pass,
    never reused), or -1 outside a backward pass. (The private accessor
    that torch's own `register_multi_grad_hook` and non-reentrant
    checkpointing use to tell backward passes apart.)"""
    return torch._C._current_graph_task_id()


class _ArmRowStep(torch.autograd.Function):
    """The identity on a scaled loss; its backward, the first node of any
    backward pass through the loss, arms that pass (and only it) for the
    owner's lookups."""

    @staticmethod
    def forward(ctx, loss, owner):
        ctx.owner = owner
        return loss.clone()

    @staticmethod
    def backward(ctx, upstream):
        optimizer = ctx.owner()
        if optimizer is not None:
            optimizer.armed_backward = _graph_task()
        return upstream, None


def arm_row_step(optimizer, loss):
    """`loss` whose backward pass gives `optimizer`'s tables sparse
    gradients (through `_ArmRowStep`); `loss` itself where autograd does
    not record it."""
    if not (isinstance(loss, torch.Tensor) and loss.requires_grad
            and torch.is_grad_enabled()):
        return loss
    return _ArmRowStep.apply(loss, weakref.ref(optimizer))


class _RowLookup(torch.autograd.Function):
    """`table[rows]` whose gradient for `table` is a sparse COO tensor in a
    backward pass that its optimizer armed, else a dense one."""

    @staticmethod
    def forward(ctx, table, rows, owner):
        ctx.save_for_backward(rows)
        ctx.table_shape = tuple(table.shape)
        ctx.owner = owner
        return table.index_select(0, rows.reshape(-1)).reshape(
            tuple(rows.shape) + tuple(table.shape[1:]))

    @staticmethod
    def backward(ctx, upstream):
        (rows,) = ctx.saved_tensors
        shape = ctx.table_shape
        values = upstream.reshape((-1,) + shape[1:])
        indices = rows.reshape(1, -1).long()
        optimizer = ctx.owner()
        if optimizer is not None and optimizer.armed_backward == _graph_task():
            # (the rows are in range: the layers clamp them before the gather)
            return torch.sparse_coo_tensor(indices, values, shape,
                                           check_invariants=False), None, None
        dense = torch.zeros(shape, dtype=values.dtype, device=values.device)
        return dense.index_add_(0, indices[0], values), None, None


def take_rows(table, rows):
    """`table[rows]` through `_RowLookup` for a table whose optimizer takes
    row gradients, while autograd records; else `None` (the caller gathers)."""
    owner = getattr(table, OWNER_ATTRIBUTE, None)
    if owner is None or owner() is None or not torch.is_grad_enabled():
        return None
    value = table.value
    if not value.requires_grad:
        return None
    rows = torch.as_tensor(rows, device=value.device)
    return _RowLookup.apply(value, rows, owner)


def row_gradient(gradient):
    """`(rows, values)` of a sparse `.grad`, duplicates included (the
    optimizer sums them once, in `unique_rows`), else `None`."""
    if not (isinstance(gradient, torch.Tensor) and gradient.is_sparse):
        return None
    # `_indices()` / `_values()`: torch's accessors for a tensor that may be
    # uncoalesced (as the sum of two lookups' gradients is)
    return gradient._indices()[0], gradient._values()


# -- row updates inside `SparseRowOptimizer` ----------------------------------

def unique_rows(indices, values, num_rows):
    """`(rows, summed)`: distinct row ids, each with its summed gradient."""
    rows, inverse = torch.unique(indices.reshape(-1).long(), return_inverse=True)
    summed = torch.zeros((rows.shape[0],) + tuple(values.shape[1:]),
                         dtype=values.dtype, device=values.device)
    return rows, summed.index_add_(0, inverse.reshape(-1), values)


def gather_rows(variable, rows):
    return variable.value.detach().index_select(0, rows)


def scatter_rows(variable, rows, values):
    """Writes `values` to `rows` of the variable, in place."""
    variable.value.data.index_copy_(0, rows, values.to(variable.value.dtype))
