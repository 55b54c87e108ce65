"""`SparseRowOptimizer`: embedding tables updated only at the rows a batch used.

Keras's optimizers update every row of an embedding table on every step:
Adam's moments decay everywhere, and on TensorFlow even SGD turns a gather's
`IndexedSlices` gradient into a full-size tensor. A step then costs in
proportion to the vocabulary, not to the batch. `SparseRowOptimizer` splits
the model's variables in two: embedding tables get a row-wise update on the
touched rows only (with their optimizer slots), every other variable keeps
the wrapped Keras optimizer.
"""

import functools
import re
import types
import warnings

import keras
from keras import backend
from keras import ops
from keras import saving

from keras_mixed_dim.backend.row_gradients import RowGradient

TABLE_OPTIMIZERS = ("sgd", "adagrad", "adam")

# Variable names of the package's table layers and of `keras.layers.Embedding`.
_TABLE_NAME = re.compile(
    r"(embeddings|block_\d+_embeddings|block_\d+_(quotient|remainder)"
    r"|(quotient|remainder)_embeddings|stacked_.*_embeddings)")
SPARSE_ROWS_ATTRIBUTE = "sparse_rows"


def is_embedding_table(variable):
    """The default rule for which variables get sparse row updates.

    A variable is a table when its `sparse_rows` attribute is True (set it on
    a table of your own layer, or set it False to opt a table out), or,
    without that attribute, when it is a trainable 2-D float variable named
    `embeddings` (`keras.layers.Embedding`), `block_{i}_embeddings`
    (`MixedDimEmbedding`) or `stacked_*_embeddings` (`StackedEmbedding`).
    """
    flag = getattr(variable, SPARSE_ROWS_ATTRIBUTE, None)
    if flag is not None:
        return bool(flag)
    return (len(variable.shape) == 2 and "float" in str(variable.dtype)
            and _TABLE_NAME.fullmatch(variable.name) is not None)


@saving.register_keras_serializable(package="keras_mixed_dim")
class SparseRowOptimizer(keras.optimizers.Optimizer):
    """Sparse row updates for embedding tables, a Keras optimizer for the rest.

    Each step, an embedding table's rows that the batch looked up (the
    "touched" rows) are updated with `table_optimizer`; the other rows and
    their optimizer slots are not read or written and stay bit-for-bit the
    same. Variables that are not tables go to `dense_optimizer` unchanged.

    Table optimizers, per touched row `r` with gradient `g_r` (a row's
    duplicates in the batch summed, as in the dense gradient):

    - `"sgd"`: `w_r -= lr * g_r`. Equal to `keras.optimizers.SGD` (no
      momentum) on the touched rows; untouched rows have zero gradient, so
      this is exactly Keras's SGD at a fraction of the cost.
    - `"adagrad"`: row-wise Adagrad as in DLRM and FBGEMM, one accumulator
      per row instead of per entry (the slot memory shrinks `dim`-fold):
      `a_r += mean(g_r ** 2)`, `w_r -= lr * g_r / sqrt(a_r + epsilon)`. With
      a one-column table it is `keras.optimizers.Adagrad` exactly.
    - `"adam"`: lazy Adam (TF1's `LazyAdamOptimizer`): Keras's Adam update
      with `m_r`, `v_r` and the weights changed on touched rows only; the
      bias correction uses the global step. When every row is touched it is
      `keras.optimizers.Adam`; otherwise untouched rows keep their moments
      instead of decaying them (and get no momentum-only step).

    A row counts as touched when its summed gradient is not all zero, so a
    placeholder row that a layer gathers and masks out stays unchanged.

    On TensorFlow the gradient stays an `IndexedSlices` end to end (ids
    deduplicated with `tf.unique`, rows written with `scatter_update`), so a
    step's cost depends on the batch only, also under `MirroredStrategy` and
    `MultiWorkerMirroredStrategy` (the rows of the global batch, updated
    once with the replicas' summed gradient on every copy). On JAX and
    PyTorch the package's models (and any model passed to
    `enable_sparse_row_steps`) differentiate with respect to the gathered
    rows and hand this optimizer `RowGradient`s; a plain dense gradient is
    masked to its non-zero rows instead (the same results, at a cost in
    proportion to the table, with a warning).

    Example:

    ```python
    model.compile(
        optimizer=SparseRowOptimizer(keras.optimizers.Adam(1e-3),
                                     table_optimizer="adagrad",
                                     learning_rate=0.05),
        loss="binary_crossentropy")
    ```

    Args:
        dense_optimizer: A Keras optimizer (instance, name or config) for the
            variables that are not tables. Defaults to `"adam"`.
        table_optimizer: `"sgd"`, `"adagrad"` (row-wise) or `"adam"` (lazy).
        learning_rate: The tables' learning rate (a float or a
            `LearningRateSchedule`); `None` uses `dense_optimizer`'s.
        beta_1, beta_2: Adam's moment decays.
        epsilon: Added inside the square root (Adagrad) or to the root
            (Adam), as in Keras's optimizers.
        initial_accumulator_value: Adagrad's starting accumulator.
        is_table: Predicate `variable -> bool` choosing the tables; defaults
            to `is_embedding_table`. Not serialized; pass it again when
            loading a model compiled with a custom one.
        name: Optimizer name.
    """

    def __init__(
        self,
        dense_optimizer="adam",
        table_optimizer="adagrad",
        learning_rate=None,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        initial_accumulator_value=0.1,
        is_table=None,
        name="sparse_row_optimizer",
        **kwargs,
    ):
        if table_optimizer not in TABLE_OPTIMIZERS:
            raise ValueError(
                f"`table_optimizer` must be one of {TABLE_OPTIMIZERS}. "
                f"Received: table_optimizer={table_optimizer!r}")
        if isinstance(dense_optimizer, SparseRowOptimizer):
            raise ValueError("`dense_optimizer` cannot itself be a SparseRowOptimizer.")
        dense_optimizer = keras.optimizers.get(dense_optimizer)
        for key, value, low, high in (("beta_1", beta_1, 0.0, 1.0),
                                      ("beta_2", beta_2, 0.0, 1.0)):
            if not low <= float(value) < high:
                raise ValueError(f"`{key}` must be in [0, 1). Received: {key}={value!r}")
        if float(epsilon) <= 0:
            raise ValueError(f"`epsilon` must be > 0. Received: epsilon={epsilon!r}")
        if float(initial_accumulator_value) < 0:
            raise ValueError(
                "`initial_accumulator_value` must be >= 0. Received: "
                f"initial_accumulator_value={initial_accumulator_value!r}")
        if is_table is not None and not callable(is_table):
            raise ValueError(f"`is_table` must be callable. Received: {is_table!r}")
        if isinstance(learning_rate, (int, float)) and learning_rate < 0:
            raise ValueError(
                f"`learning_rate` must be >= 0. Received: learning_rate={learning_rate!r}")
        super().__init__(
            learning_rate=0.0 if learning_rate is None else learning_rate,
            name=name, **kwargs)
        self._own_learning_rate = learning_rate is not None
        self.dense_optimizer = dense_optimizer
        self.table_optimizer = table_optimizer
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.is_table = is_table or is_embedding_table
        self._warned_dense = False

    # `enable_sparse_row_steps`' train steps hand this optimizer `RowGradient`s.
    accepts_row_gradients = True

    # -- variables -----------------------------------------------------------

    def build(self, var_list):
        if self.built:
            return
        # A plain holder: lists assigned to an optimizer attribute would be
        # tracked as its own variables (and donated twice on JAX).
        self._groups = _Groups()
        for variable in var_list:
            group = self._groups.tables if self.is_table(variable) else self._groups.dense
            group.append(variable)
        self.dense_optimizer.build(self._groups.dense)
        for variable in self._groups.tables:
            rows = variable.shape[0]
            slots = []
            if self.table_optimizer == "adagrad":
                slots.append(self.add_variable(
                    (rows,), initializer=keras.initializers.Constant(
                        self.initial_accumulator_value),
                    dtype=variable.dtype, name=_slot_name(variable, "row_accumulator")))
            elif self.table_optimizer == "adam":
                for slot in ("momentum", "velocity"):
                    slots.append(self.add_variable_from_reference(
                        variable, name=slot))
            self._groups.slots[self._var_key(variable)] = slots
        super().build(var_list)

    @property
    def variables(self):
        return self._variables[:] + self.dense_optimizer.variables

    @property
    def table_variables(self):
        """The model variables that get sparse row updates (after `build`)."""
        return list(self._groups.tables) if self.built else []

    @property
    def dense_variables(self):
        """The model variables updated by `dense_optimizer` (after `build`)."""
        return list(self._groups.dense) if self.built else []

    def _table_learning_rate(self):
        if self._own_learning_rate:
            return self.learning_rate
        return self.dense_optimizer.learning_rate

    # -- updates -------------------------------------------------------------

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "Build the optimizer first (`optimizer.build(variables)`) or "
                    "pass `trainable_variables`.")
            trainable_variables = self._trainable_variables
        else:
            trainable_variables = list(trainable_variables)
            if not self.built:
                with keras.name_scope(self.name):
                    self.build(trainable_variables)
        if len(grads) != len(trainable_variables):
            raise ValueError(
                f"Got {len(grads)} gradients for {len(trainable_variables)} variables.")
        dense_grads, dense_vars, table_pairs = [], [], []
        for grad, variable in zip(grads, trainable_variables):
            if self._var_key(variable) in self._groups.slots:
                table_pairs.append((grad, variable))
            else:
                dense_grads.append(grad)
                dense_vars.append(variable)
        if dense_vars:
            self.dense_optimizer.apply(dense_grads, dense_vars)
        with keras.name_scope(self.name):
            scale = self.loss_scale_factor
            learning_rate = ops.cast(self._table_learning_rate(), "float32")
            step = ops.cast(self._iterations + 1, "float32")
            table_pairs = [(_unscaled(grad, scale), variable)
                           for grad, variable in table_pairs if grad is not None]
            if backend.backend() == "tensorflow":
                from keras_mixed_dim.backend.tensorflow import sparse_rows

                # under tf.distribute: all-reduced, then applied to each copy
                sparse_rows.update_tables(table_pairs, self._update_and_constrain,
                                          learning_rate, step)
            else:
                for grad, variable in table_pairs:
                    self._update_and_constrain(grad, variable, learning_rate, step)
        self._iterations.assign_add(1)

    def _update_and_constrain(self, grad, variable, learning_rate, step):
        self._update_table(grad, variable, learning_rate, step)
        if variable.constraint is not None:
            variable.assign(variable.constraint(variable))

    def _update_table(self, grad, variable, learning_rate, step):
        slots = self._groups.slots[self._var_key(variable)]
        name = backend.backend()
        if isinstance(grad, RowGradient):
            if grad.dense is None:
                self._update_rows(variable, slots, _row_ops(name), grad.indices,
                                  grad.values, learning_rate, step)
                return
            grad = ops.convert_to_tensor(grad.dense, dtype=variable.dtype) + (
                ops.scatter(ops.expand_dims(grad.indices, -1),
                            ops.cast(grad.values, variable.dtype), variable.shape)
                if grad.has_rows else 0)
        elif name == "tensorflow":
            from keras_mixed_dim.backend.tensorflow import sparse_rows

            if sparse_rows.is_sparse(grad):
                if self.table_optimizer == "sgd":
                    # a scatter-subtract adds up duplicate ids by itself
                    sparse_rows.scatter_sub_rows(
                        variable, grad.indices,
                        grad.values * ops.cast(learning_rate, grad.values.dtype))
                    return
                self._update_rows(variable, slots, sparse_rows, grad.indices,
                                  grad.values, learning_rate, step)
                return
        elif not self._warned_dense:
            self._warned_dense = True
            warnings.warn(
                f"SparseRowOptimizer got a dense gradient for the table "
                f"{variable.path!r}: on {name} a step then costs in proportion to "
                "the table. Call keras_mixed_dim.optimizers.sparse_rows."
                "enable_sparse_row_steps(model) after building the model, so the "
                "train step differentiates with respect to the rows it gathers.",
                stacklevel=3)
        # A dense gradient: rows with an all-zero gradient were not looked
        # up, and keep their values and slots exactly.
        grad = ops.convert_to_tensor(grad, dtype=variable.dtype)
        touched = ops.any(ops.not_equal(grad, 0), axis=1)
        values = [variable.value] + [slot.value for slot in slots]
        new = self._row_update(grad, values, learning_rate, step)
        for target, old, value in zip((variable, *slots), values, new):
            mask = touched if len(old.shape) == 1 else ops.expand_dims(touched, 1)
            target.assign(ops.where(mask, value, old))

    def _update_rows(self, variable, slots, row_ops, indices, values, learning_rate,
                     step):
        """Updates the rows `indices` (duplicates summed) and their slots only."""
        rows, row_grads = row_ops.unique_rows(
            indices, ops.cast(values, variable.dtype), variable.shape[0])
        old = [row_ops.gather_rows(v, rows) for v in (variable, *slots)]
        new = self._row_update(row_grads, old, learning_rate, step)
        # Layers gather a placeholder row for ids outside a block and mask it
        # out; its gradient is exactly zero, and like the dense path it must
        # leave the row and its slots alone.
        touched = ops.any(ops.not_equal(row_grads, 0), axis=1)
        for target, before, after in zip((variable, *slots), old, new):
            mask = touched if len(before.shape) == 1 else ops.expand_dims(touched, 1)
            row_ops.scatter_rows(target, rows, ops.where(mask, after, before))

    def _row_update(self, grad, values, learning_rate, step):
        """New `[weights, *slots]` of rows whose summed gradient is `grad`."""
        weights = values[0]
        grad = ops.cast(grad, weights.dtype)
        lr = ops.cast(learning_rate, weights.dtype)
        if self.table_optimizer == "sgd":
            return [weights - lr * grad]
        if self.table_optimizer == "adagrad":
            accumulator = values[1] + ops.mean(ops.square(grad), axis=1)
            scale = lr / ops.sqrt(accumulator + self.epsilon)
            return [weights - ops.expand_dims(scale, 1) * grad, accumulator]
        momentum, velocity = values[1], values[2]
        step = ops.cast(step, weights.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, weights.dtype), step)
        beta_2_power = ops.power(ops.cast(self.beta_2, weights.dtype), step)
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        momentum = momentum + (grad - momentum) * (1 - self.beta_1)
        velocity = velocity + (ops.square(grad) - velocity) * (1 - self.beta_2)
        weights = weights - (momentum * alpha) / (ops.sqrt(velocity) + self.epsilon)
        return [weights, momentum, velocity]

    def update_step(self, gradient, variable, learning_rate):
        raise NotImplementedError("SparseRowOptimizer updates through `apply`.")

    def finalize_variable_values(self, var_list):
        self.dense_optimizer.finalize_variable_values(
            [v for v in var_list if self._var_key(v) not in self._groups.slots])

    def get_config(self):
        config = super().get_config()
        learning_rate = config.pop("learning_rate")
        config.update({
            "dense_optimizer": saving.serialize_keras_object(self.dense_optimizer),
            "table_optimizer": self.table_optimizer,
            "learning_rate": learning_rate if self._own_learning_rate else None,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "initial_accumulator_value": self.initial_accumulator_value,
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["dense_optimizer"] = saving.deserialize_keras_object(
            config["dense_optimizer"], custom_objects=custom_objects)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = saving.deserialize_keras_object(
                config["learning_rate"], custom_objects=custom_objects)
        return cls(**config)


class _Groups:
    def __init__(self):
        self.tables, self.dense, self.slots = [], [], {}


def _slot_name(variable, slot):
    return f"{variable.path.replace('/', '_').replace(':', '_')}_{slot}"


def _unscaled(grad, scale):
    if scale is None:
        return grad
    return grad.scaled(scale) if isinstance(grad, RowGradient) else grad / scale


def _row_ops(backend_name):
    """The backend's `unique_rows` / `gather_rows` / `scatter_rows`."""
    if backend_name == "tensorflow":
        from keras_mixed_dim.backend.tensorflow import sparse_rows
    elif backend_name == "jax":
        from keras_mixed_dim.backend.jax import sparse_rows
    elif backend_name == "torch":
        from keras_mixed_dim.backend.torch import sparse_rows
    else:
        raise ValueError(f"No sparse row updates on the {backend_name!r} backend.")
    return sparse_rows


def sparse_row_train_step(model, keras_step, *args):
    """A train step that differentiates tables by rows on JAX and PyTorch.

    `keras_step` is the model's own `train_step` (bound), which runs instead
    on TensorFlow (sparse already), with an optimizer that is not a
    `SparseRowOptimizer`, or when no table is gathered by rows. `args` are
    the backend's `train_step` arguments. `IdSafeModel` (the package's
    models) uses this as its step; see `enable_sparse_row_steps` for others.
    """
    name = backend.backend()
    if name == "jax":
        from keras_mixed_dim.backend.jax.sparse_rows import train_step
    elif name == "torch":
        from keras_mixed_dim.backend.torch.sparse_rows import train_step
    else:
        return keras_step(*args)
    return train_step(model, *args, keras_step=keras_step)


def enable_sparse_row_steps(model):
    """Makes `model.fit` differentiate embedding tables by rows on JAX and PyTorch.

    Keras's JAX and PyTorch train steps compute a dense gradient for each
    table, of the table's shape, so a step costs in proportion to the
    vocabulary however few rows a batch uses. After this call, when the
    model is compiled with a `SparseRowOptimizer`, its train step
    differentiates with respect to the rows that the package's layers gather
    (through `keras_mixed_dim.backend.take_rows`) and the optimizer updates
    those rows only. A table read any other way (a regularizer,
    `keras.layers.Embedding`, the MD layer's small head blocks) keeps its
    dense gradient, so results are the same as without this call.

    On TensorFlow a gather's gradient is already sparse (`IndexedSlices`)
    and this does nothing. With any other optimizer the model keeps Keras's
    train step. The step is an attribute of this model object: call it again
    on a model loaded from a file. The package's models (`IdSafeModel`:
    `dlrm`, `matrix_factorization`, `neural_cf`) have this step already.

    Args:
        model: A Keras model.

    Returns:
        `model`.
    """
    if backend.backend() not in ("jax", "torch"):
        return model
    if getattr(model.train_step, "func", None) is sparse_row_train_step or getattr(
            type(model).train_step, "sparse_row_step", False):
        return model
    model.train_step = functools.partial(
        sparse_row_train_step, model, types.MethodType(type(model).train_step, model))
    # a train function made before this call would keep the previous step
    model.train_function = None
    return model
