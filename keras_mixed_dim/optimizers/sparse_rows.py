"""`SparseRowOptimizer`: embedding tables updated only at the rows a batch used.

Keras's optimizers update every row of an embedding table on every step:
Adam's moments decay everywhere, and on TensorFlow even SGD turns a gather's
`IndexedSlices` gradient into a full-size tensor. A step then costs in
proportion to the vocabulary, not to the batch. `SparseRowOptimizer` splits
the model's variables in two: embedding tables get a row-wise update on the
touched rows only (with their optimizer slots), every other variable keeps
the wrapped Keras optimizer.
"""

import warnings

import keras
from keras import ops
from keras import saving

from keras_mixed_dim import backend
from keras_mixed_dim.backend import divide_gradient
from keras_mixed_dim.backend.row_gradients import SPARSE_ROWS_ATTRIBUTE
from keras_mixed_dim.backend.row_gradients import RowGradient

TABLE_OPTIMIZERS = ("sgd", "adagrad", "adam", "ftrl")

# FTRL's options and their defaults (those of `keras.optimizers.Ftrl`).
_FTRL_DEFAULTS = {
    "learning_rate_power": -0.5,
    "l1_regularization_strength": 0.0,
    "l2_regularization_strength": 0.0,
    "l2_shrinkage_regularization_strength": 0.0,
    "beta": 0.0,
}

# `keras.layers.Embedding`'s table: the one variable chosen by name (see
# `is_embedding_table`).
_KERAS_EMBEDDING_NAME = "embeddings"


def is_embedding_table(variable):
    """The default rule for which variables get sparse row updates.

    A variable is a table when its `sparse_rows` attribute is True. The
    package's layers set it on their tables in `build`
    (`keras_mixed_dim.backend.row_gradients.flag_table`); set it on a table
    of your own layer (read through `keras_mixed_dim.backend.take_rows`),
    or set it False to opt a table out (again after loading a model: `build`
    flags the tables anew). A variable without the attribute is a table
    only when it is a 2-D float variable named `embeddings`: the table of
    `keras.layers.Embedding`, whose `build` the package cannot flag, so that
    models with it (and their saved optimizer slots) keep working.

    Args:
        variable: A Keras variable.

    Returns:
        True when the variable gets sparse row updates.

    Example:

    >>> layer = keras.layers.Embedding(100, 8)
    >>> layer.build()
    >>> is_embedding_table(layer.embeddings)
    True
    """
    flag = getattr(variable, SPARSE_ROWS_ATTRIBUTE, None)
    if flag is not None:
        return bool(flag)
    return (len(variable.shape) == 2 and "float" in str(variable.dtype)
            and variable.name == _KERAS_EMBEDDING_NAME)


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
    - `"ftrl"`: FTRL-Proximal (McMahan et al. 2013), Keras's `Ftrl` update
      with per-entry `accumulator` and `linear` slots, on touched rows only
      (TF1's sparse FTRL). Keras's dense `Ftrl` recomputes every row from
      its slots each step, so a row it never saw a gradient for becomes 0;
      here such a row keeps its value until it is first looked up.

    A row counts as touched when its summed gradient is not all zero, so a
    placeholder row that a layer gathers and masks out stays unchanged.

    The options of `keras.optimizers.Optimizer` given to this optimizer
    apply to every variable as in Keras's optimizers, to the tables on the
    touched rows (options of `dense_optimizer` apply to the dense variables
    only, after these): `clipnorm` clips each variable's gradient (a
    table's: its rows' summed gradients) to that norm, `clipvalue` each
    entry, `global_clipnorm` all gradients together, row gradients
    included; `loss_scale_factor` unscales every gradient. `weight_decay` is
    lazy for tables, as TF1's lazy AdamW: a touched row is decayed by
    `weight_decay * table_learning_rate` before its step, an
    untouched row is not decayed (Keras decays every row every step); dense
    variables are decayed with `dense_optimizer`'s rate. `use_ema` and
    `gradient_accumulation_steps` are refused, here and on
    `dense_optimizer` (an average or an accumulator of every row would cost
    in proportion to the table), as are `global_clipnorm` and
    `weight_decay` under a tf.distribute strategy. Wrapped in a
    `LossScaleOptimizer` (what `compile` does under `mixed_float16`) the
    steps equal Keras's, but table gradients reach this optimizer dense, a
    cost in proportion to the table.

    Tables are the variables chosen by `is_table` (default
    `is_embedding_table`: the `sparse_rows` flag that the package's layers
    set in `build`, and `keras.layers.Embedding`'s table). On TensorFlow
    the gradient stays an `IndexedSlices` end to end (ids deduplicated with
    `tf.unique`, rows written with `scatter_update`), so a step's cost
    depends on the batch only, also under `MirroredStrategy` and
    `MultiWorkerMirroredStrategy` (the rows of the global batch, updated
    once with the replicas' summed gradient on every copy). On PyTorch the
    package's lookups give their tables a sparse gradient in the backward
    pass of any loss scaled by this optimizer's `scale_loss` (which Keras's
    train step calls), so `model.fit` and a user's own `train_step` need
    nothing more. On JAX, Keras's step can only produce table-sized
    gradients; the package's models (`IdSafeModel`) differentiate with
    respect to the gathered rows instead, and a user's own `train_step` can
    do the same with `sparse_row_value_and_grad`. A table whose gradient
    arrives dense anyway (`keras.layers.Embedding` on JAX and PyTorch,
    Keras's JAX step) is masked to its non-zero rows: the same results, at a
    cost in proportion to the table, with a warning.

    Example:

    ```python
    model.compile(
        optimizer=SparseRowOptimizer(keras.optimizers.Adam(1e-3),  # MLPs: 1e-3
                                     table_optimizer="adagrad",
                                     table_learning_rate=0.05),  # tables: 0.05
        loss="binary_crossentropy")
    ```

    Two learning rates: the tables' (`table_learning_rate`) and the dense
    variables' (`dense_optimizer`'s own). `optimizer.learning_rate` (and
    `optimizer.table_learning_rate`) reads the one the tables use. Setting
    it, as Keras's `LearningRateScheduler` and `ReduceLROnPlateau` do, sets
    `dense_optimizer.learning_rate` where the tables follow it (the default:
    the whole model's rate, as the callback means), and the tables' own rate
    only where `table_learning_rate` was given.

    Args:
        dense_optimizer: A Keras optimizer (instance, name or config) for the
            variables that are not tables. Defaults to `"adam"`.
        table_optimizer: `"sgd"`, `"adagrad"` (row-wise), `"adam"` (lazy)
            or `"ftrl"`.
        table_learning_rate: The learning rate of the tables' row updates
            only (a float or a `LearningRateSchedule`); `None` (default)
            uses `dense_optimizer`'s. The dense variables always use
            `dense_optimizer`'s own rate: set that one on `dense_optimizer`.
        beta_1, beta_2: Adam's moment decays (refused with another
            `table_optimizer` unless left at their defaults).
        epsilon: Added inside the square root (Adagrad) or to the root
            (Adam), as in Keras's optimizers (refused with `"sgd"` or
            `"ftrl"` unless left at its default).
        initial_accumulator_value: Adagrad's and FTRL's starting accumulator
            (refused with `"sgd"` or `"adam"` unless left at its default).
        learning_rate_power, l1_regularization_strength,
        l2_regularization_strength, l2_shrinkage_regularization_strength,
        beta: FTRL's, as in `keras.optimizers.Ftrl` (refused with another
            `table_optimizer`).
        is_table: Predicate `variable -> bool` choosing the tables; defaults
            to `is_embedding_table`. Not serialized; pass it again when
            loading a model compiled with a custom one.
        name: Optimizer name.
        **kwargs: The options of `keras.optimizers.Optimizer` (see above),
            and `learning_rate`, the deprecated name of
            `table_learning_rate` (it never set the dense variables' rate;
            it warns, and will be removed in 0.4.0).
    """

    def __init__(
        self,
        dense_optimizer="adam",
        table_optimizer="adagrad",
        table_learning_rate=None,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        initial_accumulator_value=0.1,
        is_table=None,
        name="sparse_row_optimizer",
        learning_rate_power=_FTRL_DEFAULTS["learning_rate_power"],
        l1_regularization_strength=_FTRL_DEFAULTS["l1_regularization_strength"],
        l2_regularization_strength=_FTRL_DEFAULTS["l2_regularization_strength"],
        l2_shrinkage_regularization_strength=_FTRL_DEFAULTS[
            "l2_shrinkage_regularization_strength"],
        beta=_FTRL_DEFAULTS["beta"],
        **kwargs,
    ):
        if "learning_rate" in kwargs:
            table_learning_rate = _renamed_learning_rate(
                kwargs.pop("learning_rate"), table_learning_rate)
        learning_rate = table_learning_rate
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
                "`table_learning_rate` (the tables' learning rate) must be >= 0. "
                f"Received: table_learning_rate={learning_rate!r}")
        ftrl = {"learning_rate_power": learning_rate_power,
                "l1_regularization_strength": l1_regularization_strength,
                "l2_regularization_strength": l2_regularization_strength,
                "l2_shrinkage_regularization_strength":
                    l2_shrinkage_regularization_strength,
                "beta": beta}
        _check_ftrl_options(table_optimizer, ftrl)
        _check_unused_options(table_optimizer, {
            "beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon,
            "initial_accumulator_value": initial_accumulator_value})
        # Keras's own checks of the options (one clipping option, ranges)
        super().__init__(
            learning_rate=0.0 if learning_rate is None else learning_rate,
            name=name, **kwargs)
        _check_optimizer_options(self, dense_optimizer)
        self._own_learning_rate = learning_rate is not None
        self.dense_optimizer = dense_optimizer
        self.table_optimizer = table_optimizer
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.initial_accumulator_value = float(initial_accumulator_value)
        for key, value in ftrl.items():
            setattr(self, key, float(value))
        self.is_table = is_table or is_embedding_table
        self._warned_dense = False
        # PyTorch: the autograd graph task of the last backward pass of a
        # loss that `scale_loss` returned (only that pass's lookups give the
        # tables sparse gradients); set in that pass, cleared by `apply`.
        self.armed_backward = None

    # The JAX row step hands this optimizer `RowGradient`s.
    accepts_row_gradients = True

    # -- variables -----------------------------------------------------------

    def build(self, var_list):
        if self.built:
            return
        # A plain holder: lists assigned to an optimizer attribute would be
        # tracked as its own variables (and donated twice on JAX).
        self._groups = _Groups()
        for variable in var_list:
            table = self.is_table(variable)
            if table and len(variable.shape) != 2:
                raise ValueError(
                    f"Variable {variable.path!r} of shape {tuple(variable.shape)} was "
                    "chosen as an embedding table (its `sparse_rows` attribute or "
                    "`is_table`), but tables must be 2-D (rows, dim). Set "
                    f"`variable.{SPARSE_ROWS_ATTRIBUTE} = False` or change `is_table`.")
            group = self._groups.tables if table else self._groups.dense
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
            elif self.table_optimizer == "ftrl":
                slots.append(self.add_variable_from_reference(
                    variable, name="accumulator",
                    initializer=keras.initializers.Constant(
                        self.initial_accumulator_value)))
                slots.append(self.add_variable_from_reference(variable, name="linear"))
            self._groups.slots[self._var_key(variable)] = slots
        backend.attach_row_optimizer(self, self._groups.tables)
        super().build(var_list)

    def scale_loss(self, loss):
        """Keras's `scale_loss`; on PyTorch the loss it returns also arms the
        row step: the backward pass of that loss (that pass only) gives this
        optimizer's tables sparse gradients, which the next `apply`
        consumes. A loss that is never backpropagated arms nothing."""
        loss = super().scale_loss(loss)
        if self.built:
            loss = backend.arm_row_step(self, loss)
        return loss

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

    def reset_slot_value(self, slot):
        """What a table slot holds for rows whose state starts over (ids that
        re-ranking moved to another block, or every row after a re-plan).

        Returns a number, or for FTRL's `linear` slot a function of those
        rows' weights (numpy, or tensors inside a train step, as
        `DynamicEmbedding`'s in-step row writes give them) giving the
        `linear` values from which FTRL's next step recomputes exactly
        those weights (with the accumulator at `initial_accumulator_value`):
        FTRL derives its weights from its slots, so zeros would drop the
        rows' warm start.
        """
        name = slot.name
        if name.endswith("accumulator"):
            return self.initial_accumulator_value
        if self.table_optimizer != "ftrl" or not name.endswith("_linear"):
            return 0.0
        import numpy as np

        l1 = self.l1_regularization_strength
        accumulator = self.initial_accumulator_value ** -self.learning_rate_power
        l2 = 2 * self.l2_regularization_strength

        def linear(rows):
            # w = (clip(z, -l1, l1) - z) / quadratic, solved for z
            if isinstance(rows, np.ndarray):
                lr = float(ops.convert_to_numpy(self._table_learning_rate()))
                quadratic = accumulator / lr + l2 + self.beta / lr
                return -(quadratic * rows + np.sign(rows) * l1)
            # in a traced step: the rate as the step reads it
            lr = ops.cast(self._table_learning_rate(), rows.dtype)
            quadratic = accumulator / lr + l2 + self.beta / lr
            return -(quadratic * rows + ops.sign(rows) * l1)

        return linear

    @property
    def table_learning_rate(self):
        """The learning rate the tables' row updates use now:
        `table_learning_rate` as given (stored in Keras's `learning_rate`
        variable), or `dense_optimizer`'s when it was None."""
        return self._table_learning_rate()

    @property
    def learning_rate(self):
        """The tables' learning rate now (`table_learning_rate`); the dense
        variables' is `dense_optimizer.learning_rate`."""
        return self._table_learning_rate()

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        # Keras's LearningRateScheduler and ReduceLROnPlateau set it meaning
        # the model's rate: with tables that follow dense_optimizer's rate,
        # that rate is the one to change (setting this optimizer's own,
        # unused, would change nothing)
        if not self._own_learning_rate:
            self.dense_optimizer.learning_rate = learning_rate
            return
        keras.optimizers.Optimizer.learning_rate.fset(self, learning_rate)

    def _table_learning_rate(self):
        if self._own_learning_rate:
            return self._get_current_learning_rate()
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
        if backend.has_distribution_strategy() and (self.global_clipnorm or self.weight_decay):
            option = "global_clipnorm" if self.global_clipnorm else "weight_decay"
            raise ValueError(
                f"SparseRowOptimizer does not support `{option}` under a "
                "tf.distribute strategy; set it on `dense_optimizer` (dense "
                "variables only) or train without the strategy.")
        scale = self.loss_scale_factor
        armed = self.armed_backward is not None
        self.armed_backward = None
        dense_grads, dense_vars, table_pairs = [], [], []
        for grad, variable in zip(grads, trainable_variables):
            if self._var_key(variable) in self._groups.slots:
                if grad is not None:
                    # (PyTorch's sparse `.grad` as a RowGradient)
                    grad = backend.table_gradient(grad, armed)
                    table_pairs.append((_unscaled(grad, scale), variable))
            else:
                dense_grads.append(None if grad is None else _unscaled(grad, scale))
                dense_vars.append(variable)
        with keras.name_scope(self.name):
            learning_rate = ops.cast(self._table_learning_rate(), "float32")
            step = ops.cast(self._iterations + 1, "float32")
            if self.global_clipnorm:
                # every gradient first: the norm is over all of them
                prepared = [(self._prepare(grad, variable), variable)
                            for grad, variable in table_pairs]
                # (a gather's gradient of a dense variable made a tensor)
                dense_grads = [None if g is None else ops.convert_to_tensor(g)
                               for g in dense_grads]
                factor = _global_clip_factor(
                    [g for g in dense_grads if g is not None]
                    + [p.values for p, _ in prepared], self.global_clipnorm)
                dense_grads = [None if g is None else g * ops.cast(factor, g.dtype)
                               for g in dense_grads]
                self._decay_dense(dense_vars)
                if dense_vars:
                    self.dense_optimizer.apply(dense_grads, dense_vars)
                for rows, variable in prepared:
                    rows.values = rows.values * ops.cast(factor, rows.values.dtype)
                    self._apply_prepared(rows, variable, learning_rate, step)
                    _constrain(variable)
            else:
                if self.clipnorm or self.clipvalue:
                    dense_grads = self._clip_gradients(dense_grads)
                self._decay_dense(dense_vars)
                if dense_vars:
                    self.dense_optimizer.apply(dense_grads, dense_vars)
                # (under tf.distribute: all-reduced, then applied to each copy)
                backend.update_tables(table_pairs, self._update_and_constrain,
                                      learning_rate, step)
        self._iterations.assign_add(1)

    def _decay_dense(self, variables):
        """Keras's weight decay of the dense variables, with their learning rate."""
        if not self.weight_decay:
            return
        for variable in variables:
            if self._use_weight_decay(variable):
                lr = ops.cast(self.dense_optimizer.learning_rate, variable.dtype)
                wd = ops.cast(self.weight_decay, variable.dtype)
                variable.assign(variable - variable * wd * lr)

    def _update_and_constrain(self, grad, variable, learning_rate, step):
        self._update_table(grad, variable, learning_rate, step)
        _constrain(variable)

    def _update_table(self, grad, variable, learning_rate, step):
        rows = self._prepare(grad, variable)
        if self.clipnorm:
            norm = ops.sqrt(ops.sum(ops.square(rows.values)))
            clip = ops.cast(self.clipnorm, norm.dtype)
            # Keras's `_clip_by_norm`: `g * clipnorm / max(norm, clipnorm)`
            rows.values = rows.values * clip / ops.maximum(norm, clip)
        elif self.clipvalue:
            rows.values = ops.clip(rows.values, -self.clipvalue, self.clipvalue)
        self._apply_prepared(rows, variable, learning_rate, step)

    def _prepare(self, grad, variable):
        """`grad` as a table's summed gradient: `_Rows` (distinct rows) or dense.

        Duplicates are summed first, so clipping sees the gradient that a
        dense optimizer would see.
        """
        dtype = variable.dtype
        sparse = None if isinstance(grad, RowGradient) else backend.sparse_gradient_rows(grad)
        if isinstance(grad, RowGradient):
            if grad.dense is None:
                row_ops = _row_ops()
                if self._plain_sgd() and hasattr(row_ops, "scatter_sub_rows"):
                    # as for TensorFlow's IndexedSlices below: no unique
                    # (a sort of every id, the JAX step's costliest op)
                    return _Rows(ops.cast(grad.values, dtype), grad.indices, row_ops,
                                 summed=False)
                rows, summed = row_ops.unique_rows(
                    grad.indices, ops.cast(grad.values, dtype), variable.shape[0])
                return _Rows(summed, rows, row_ops)
            grad = ops.convert_to_tensor(grad.dense, dtype=dtype) + (
                ops.scatter(ops.expand_dims(grad.indices, -1),
                            ops.cast(grad.values, dtype), variable.shape)
                if grad.has_rows else 0)
        elif sparse is not None:
            indices, values = sparse
            row_ops = _row_ops()
            if self._plain_sgd():
                # no option needs the summed rows: a scatter-subtract
                # adds up duplicate ids by itself
                return _Rows(values, indices, row_ops, summed=False)
            rows, summed = row_ops.unique_rows(
                indices, ops.cast(values, dtype), variable.shape[0])
            return _Rows(summed, rows, row_ops)
        elif backend.DENSE_TABLE_GRADIENT_ADVICE is not None and not self._warned_dense:
            self._warned_dense = True
            warnings.warn(
                f"SparseRowOptimizer got a dense gradient for the table "
                f"{variable.path!r}: on {backend.NAME} a step then costs in proportion "
                "to the table. Tables read other than through "
                "keras_mixed_dim.backend.take_rows (the package's layers, and "
                "keras.layers.Embedding after keras_mixed_dim.models.read_embedding_rows, "
                "which IdSafeModel calls) always do. "
                f"{backend.DENSE_TABLE_GRADIENT_ADVICE}",
                stacklevel=4)
        return _Rows(ops.convert_to_tensor(grad, dtype=dtype))

    def _plain_sgd(self):
        return (self.table_optimizer == "sgd" and not self.weight_decay
                and not self.clipnorm and not self.clipvalue and not self.global_clipnorm)

    def _apply_prepared(self, grad, variable, learning_rate, step):
        slots = self._groups.slots[self._var_key(variable)]
        if grad.row_ops is not None:
            if not grad.summed:
                grad.row_ops.scatter_sub_rows(
                    variable, grad.rows,
                    grad.values * ops.cast(learning_rate, grad.values.dtype))
                return
            self._update_rows(variable, slots, grad.row_ops, grad.rows, grad.values,
                              learning_rate, step)
            return
        # A dense gradient: rows with an all-zero gradient were not looked
        # up, and keep their values and slots exactly.
        values = [variable.value] + [slot.value for slot in slots]
        touched = ops.any(ops.not_equal(grad.values, 0), axis=1)
        new = self._row_update(grad.values, values, learning_rate, step, variable)
        for target, old, value in zip((variable, *slots), values, new):
            mask = touched if len(old.shape) == 1 else ops.expand_dims(touched, 1)
            target.assign(ops.where(mask, value, old))

    def _update_rows(self, variable, slots, row_ops, rows, row_grads, learning_rate,
                     step):
        """Updates the distinct `rows` (summed gradients `row_grads`) and their
        slots only."""
        old = [row_ops.gather_rows(v, rows) for v in (variable, *slots)]
        new = self._row_update(row_grads, old, learning_rate, step, variable)
        # Layers gather a placeholder row for ids outside a block and mask it
        # out; its gradient is exactly zero, and like the dense path it must
        # leave the row and its slots alone.
        touched = ops.any(ops.not_equal(row_grads, 0), axis=1)
        for target, before, after in zip((variable, *slots), old, new):
            mask = touched if len(before.shape) == 1 else ops.expand_dims(touched, 1)
            row_ops.scatter_rows(target, rows, ops.where(mask, after, before))

    def _row_update(self, grad, values, learning_rate, step, variable):
        """New `[weights, *slots]` of rows whose summed gradient is `grad`."""
        weights = values[0]
        grad = ops.cast(grad, weights.dtype)
        lr = ops.cast(learning_rate, weights.dtype)
        if self.weight_decay and self._use_weight_decay(variable):
            # lazy: only the rows this step updates are decayed
            weights = weights - weights * ops.cast(self.weight_decay, weights.dtype) * lr
        if self.table_optimizer == "sgd":
            return [weights - lr * grad]
        if self.table_optimizer == "adagrad":
            accumulator = values[1] + ops.mean(ops.square(grad), axis=1)
            scale = lr / ops.sqrt(accumulator + self.epsilon)
            return [weights - ops.expand_dims(scale, 1) * grad, accumulator]
        if self.table_optimizer == "ftrl":
            return self._ftrl_update(grad, weights, values[1], values[2], lr)
        momentum, velocity = values[1], values[2]
        step = ops.cast(step, weights.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, weights.dtype), step)
        beta_2_power = ops.power(ops.cast(self.beta_2, weights.dtype), step)
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        momentum = momentum + (grad - momentum) * (1 - self.beta_1)
        velocity = velocity + (ops.square(grad) - velocity) * (1 - self.beta_2)
        weights = weights - (momentum * alpha) / (ops.sqrt(velocity) + self.epsilon)
        return [weights, momentum, velocity]

    def _ftrl_update(self, grad, weights, accumulator, linear, lr):
        """`keras.optimizers.Ftrl.update_step` on rows: `[weights, n, z]`."""
        power = -self.learning_rate_power
        l2 = self.l2_regularization_strength + self.beta / (2.0 * lr)
        shrunk = grad + 2 * self.l2_shrinkage_regularization_strength * weights
        new_accumulator = accumulator + ops.square(grad)
        linear = linear + shrunk - (
            ops.power(new_accumulator, power) - ops.power(accumulator, power)) / lr * weights
        quadratic = ops.power(new_accumulator, power) / lr + 2 * l2
        l1 = self.l1_regularization_strength
        weights = (ops.clip(linear, -l1, l1) - linear) / quadratic
        return [weights, new_accumulator, linear]

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
            "table_learning_rate": learning_rate if self._own_learning_rate else None,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "initial_accumulator_value": self.initial_accumulator_value,
        })
        config.update({key: getattr(self, key) for key in _FTRL_DEFAULTS})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["dense_optimizer"] = saving.deserialize_keras_object(
            config["dense_optimizer"], custom_objects=custom_objects)
        if "learning_rate" in config:
            # a config saved before `table_learning_rate` (not the user's
            # call: no warning)
            config["table_learning_rate"] = _renamed_learning_rate(
                config.pop("learning_rate"), config.get("table_learning_rate"),
                warn=False)
        if isinstance(config.get("table_learning_rate"), dict):
            config["table_learning_rate"] = saving.deserialize_keras_object(
                config["table_learning_rate"], custom_objects=custom_objects)
        return cls(**config)


class _Groups:
    def __init__(self):
        self.tables, self.dense, self.slots = [], [], {}


class _Rows:
    """A table's gradient ready for the row step: `values` of the distinct
    `rows` (summed over duplicates unless `summed` is False), or a dense
    gradient when `rows` is None."""

    def __init__(self, values, rows=None, row_ops=None, summed=True):
        self.values, self.rows, self.row_ops, self.summed = values, rows, row_ops, summed


def _constrain(variable):
    if variable.constraint is not None:
        variable.assign(variable.constraint(variable))


def _global_clip_factor(values, clip_norm):
    """Keras's `clip_by_global_norm` scale for the gradients `values`."""
    norm = ops.sqrt(sum(ops.sum(ops.square(ops.cast(v, "float32"))) for v in values))
    factor = clip_norm * ops.minimum(1.0 / norm, 1.0 / clip_norm)
    # NaN when the norm is not finite, as in Keras
    return factor + (norm - norm)


# The options of `__init__` each table optimizer reads, and their defaults.
_OPTION_USERS = {
    "beta_1": (("adam",), 0.9),
    "beta_2": (("adam",), 0.999),
    "epsilon": (("adagrad", "adam"), 1e-7),
    "initial_accumulator_value": (("adagrad", "ftrl"), 0.1),
}


def _check_unused_options(table_optimizer, options):
    """A non-default option that `table_optimizer` never reads is refused
    (it would otherwise be silently ignored)."""
    for key, value in options.items():
        users, default = _OPTION_USERS[key]
        if table_optimizer not in users and float(value) != default:
            raise ValueError(
                f"`{key}` is an option of table_optimizer in {users}; with "
                f"table_optimizer={table_optimizer!r} it would be ignored. "
                f"Received: {key}={value!r}")


def _check_ftrl_options(table_optimizer, options):
    if table_optimizer != "ftrl":
        for key, value in options.items():
            if float(value) != _FTRL_DEFAULTS[key]:
                raise ValueError(
                    f"`{key}` is an option of table_optimizer='ftrl'; with "
                    f"table_optimizer={table_optimizer!r} it would be ignored. "
                    f"Received: {key}={value!r}")
        return
    if float(options["learning_rate_power"]) > 0:
        raise ValueError(
            "`learning_rate_power` must be <= 0. Received: "
            f"learning_rate_power={options['learning_rate_power']!r}")
    for key in ("l1_regularization_strength", "l2_regularization_strength",
                "l2_shrinkage_regularization_strength", "beta"):
        if float(options[key]) < 0:
            raise ValueError(f"`{key}` must be >= 0. Received: {key}={options[key]!r}")


def _check_optimizer_options(optimizer, dense_optimizer):
    """Refuses the Keras options that the row steps cannot honour."""
    if optimizer.gradient_accumulation_steps:
        raise ValueError(
            "SparseRowOptimizer does not support `gradient_accumulation_steps` "
            f"(received {optimizer.gradient_accumulation_steps!r}): accumulating "
            "table gradients would cost a table-sized buffer. Use a larger batch.")
    if optimizer.use_ema:
        raise ValueError(
            "SparseRowOptimizer does not support `use_ema=True`: an average of "
            "every table row each step would cost in proportion to the table.")
    if dense_optimizer.gradient_accumulation_steps or dense_optimizer.use_ema:
        option = ("gradient_accumulation_steps"
                  if dense_optimizer.gradient_accumulation_steps else "use_ema")
        raise ValueError(
            f"`dense_optimizer` has `{option}` set; it would apply to the dense "
            "variables but not to the tables, so SparseRowOptimizer refuses it.")
    if optimizer.weight_decay and dense_optimizer.weight_decay:
        raise ValueError(
            "`weight_decay` is set on both the SparseRowOptimizer and its "
            "`dense_optimizer`: the dense variables would be decayed twice. Set "
            "it on the SparseRowOptimizer (every variable) or on `dense_optimizer` "
            "(dense variables only).")
    if dense_optimizer.loss_scale_factor is not None:
        raise ValueError(
            "`dense_optimizer` has `loss_scale_factor` set; set it on the "
            "SparseRowOptimizer instead (it scales the loss and unscales "
            "every gradient, tables and dense variables alike).")


def _renamed_learning_rate(learning_rate, table_learning_rate, warn=True):
    """`table_learning_rate` from the deprecated `learning_rate` keyword."""
    if table_learning_rate is not None:
        raise ValueError(
            "Pass `table_learning_rate` only: `learning_rate` is its deprecated "
            "name (the tables' rate; the dense variables use `dense_optimizer`'s). "
            f"Received: learning_rate={learning_rate!r}, "
            f"table_learning_rate={table_learning_rate!r}")
    if warn:
        warnings.warn(
            "`SparseRowOptimizer(learning_rate=...)` is deprecated and will be "
            "removed in 0.4.0: it is the tables' learning rate only (the dense "
            "variables use `dense_optimizer`'s own). Pass `table_learning_rate`.",
            DeprecationWarning, stacklevel=3)
    return learning_rate


def _slot_name(variable, slot):
    return f"{variable.path.replace('/', '_').replace(':', '_')}_{slot}"


def _unscaled(grad, scale):
    if scale is None:
        return grad
    if isinstance(grad, RowGradient):
        return grad.scaled(scale)
    return divide_gradient(grad, scale)


def _row_ops():
    """The backend's `unique_rows` / `gather_rows` / `scatter_rows`."""
    if backend.ROW_OPS is None:
        raise ValueError(f"No sparse row updates on the {backend.NAME!r} backend.")
    return backend.ROW_OPS


def sparse_row_value_and_grad(model):
    """JAX: `jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)`
    with the tables' gradients as the rows the layers gathered.

    For a `train_step` of your own on JAX: call the returned function where
    Keras's step calls its `grad_fn` (same arguments, same
    `((loss, aux), grads)` result) and pass `grads` to
    `self.optimizer.stateless_apply`. With an optimizer other than a
    `SparseRowOptimizer` the gradients are Keras's.

    Example:

    ```python
    class MyModel(keras.Model):
        def train_step(self, state, data):
            trainable, non_trainable, optimizer_values, metrics_values = state
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            (loss, aux), grads = sparse_row_value_and_grad(self)(
                trainable, non_trainable, metrics_values, x, y, sample_weight,
                training=True, optimizer_variables=optimizer_values)
            trainable, optimizer_values = self.optimizer.stateless_apply(
                optimizer_values, grads, trainable)
            ...
    ```

    Args:
        model: A compiled Keras model.

    Returns:
        A function of `compute_loss_and_updates`' arguments.
    """
    if backend.row_value_and_grad is None:
        raise ValueError(
            "sparse_row_value_and_grad is for JAX train steps; on "
            f"{backend.NAME} the lookups give sparse gradients in Keras's "
            "own step already.")
    return backend.row_value_and_grad(model)


def sparse_row_train_step(model, keras_step, *args):
    """A train step that differentiates tables by rows.

    On JAX with a `SparseRowOptimizer`, `keras_mixed_dim.backend.jax`'s row
    step (Keras's step with `sparse_row_value_and_grad`); otherwise
    `keras_step(*args)`, the model's own `train_step` (bound): TensorFlow's
    and PyTorch's are sparse already. `args` are the backend's `train_step`
    arguments. `IdSafeModel` (the package's models) uses this as its step;
    a subclassed model can too.

    Args:
        model: The compiled Keras model being trained.
        keras_step: The model's own `train_step`, bound.
        *args: The backend's `train_step` arguments (on JAX `state, data`).

    Returns:
        What the backend's `train_step` returns (on JAX the logs and the new
        state).

    Example:

    ```python
    class MyModel(keras.Model):
        def train_step(self, *args):
            return sparse_row_train_step(self, super().train_step, *args)
    ```
    """
    if backend.row_train_step is None or not getattr(
            model.optimizer, "accepts_row_gradients", False):
        return keras_step(*args)
    return backend.row_train_step(model, *args)


def enable_sparse_row_steps(model):
    """Kept for compatibility: returns `model` unchanged.

    It used to replace the model's train step on JAX and PyTorch. PyTorch's
    lookups now give sparse gradients inside Keras's own step; on JAX use
    `keras_mixed_dim.models.IdSafeModel` (the package's models are) or
    `sparse_row_train_step` / `sparse_row_value_and_grad` in your own
    `train_step`. Without them `SparseRowOptimizer` warns that it got a
    dense gradient.

    Args:
        model: A Keras model.

    Returns:
        `model`.

    Example:

    >>> model = keras.Model(ids, outputs)                   # doctest: +SKIP
    >>> model.compile(optimizer=SparseRowOptimizer("adam", table_optimizer="adagrad"),
    ...               loss="mse")                           # doctest: +SKIP
    >>> enable_sparse_row_steps(model)                      # doctest: +SKIP
    """
    return model
