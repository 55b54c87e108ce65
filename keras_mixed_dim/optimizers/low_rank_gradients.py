"""Low-rank gradients by streaming power iteration, with subspace optimizer state.

Huang et al., "Low-rank Gradient Approximation For Memory-Efficient On-device
Training of Deep Neural Network" (arXiv:2004.12041): the gradient of a dense
kernel is close to low rank, and its top subspace moves slowly from batch to
batch, so one power iteration per step, warm-started from the previous
step's subspace, tracks it (streaming batch PCA). `LowRankGradients` applies
the inner optimizer to the k-dimensional coordinates of each covered
kernel's gradient, so the inner optimizer's moments are k x min(m, n)
instead of m x n.
"""

import keras
from keras import ops
from keras.src.saving import serialization_lib
from keras.src.utils import tracking

from keras_mixed_dim.checks import check_positive_int

DEFAULT_EXCLUDE = ("embedding",)


@keras.saving.register_keras_serializable(package="keras_mixed_dim")
class LowRankGradients(keras.optimizers.Optimizer):
    """Wraps an optimizer so that large dense kernels get rank-`k` gradients.

    For every 2-D trainable variable with at least `min_size` entries, more
    than `rank` rows and columns, and no `exclude` substring in its path (by
    default anything with "embedding" in it: embedding tables get row-sparse
    gradients already, and their projections belong to them), the wrapper
    keeps an orthonormal basis `Q` of the gradient's top-`rank` subspace on
    the kernel's longer side. Each step:

    1. `Q <- orth(G G^T Q)` (for a kernel `m x n` with `m >= n`; `G^T G Q`
       on the other side), `power_iterations` times, warm-started from the
       previous step's `Q`, with the column signs fixed so the basis does
       not flip between steps. An all-zero gradient leaves `Q` unchanged.
    2. The inner optimizer gets the coordinates `R = Q^T G` (`rank x n`) as
       the gradient of a zero "shadow" variable of that shape, so its
       moments live in the subspace; the shadow's update `D` is mapped back
       and added to the kernel as `Q D`. With SGD this is exactly a step
       along the rank-`rank` approximation `Q Q^T G` of the gradient.

    Other variables (biases, embeddings, small kernels) go to the inner
    optimizer unchanged. The inner optimizer's `weight_decay` is applied to
    covered kernels by the wrapper (decoupled, `w -= lr * wd * w`); its
    gradient clipping sees the projected gradients.

    The moments of Adam on an `m x n` kernel (`2 m n` floats) become
    `2 k min(m, n)`, plus the basis (`k max(m, n)`) and the shadow
    (`k min(m, n)`); all of them are in `optimizer.variables`.

    Args:
        optimizer: The inner `keras.optimizers.Optimizer` (or its name).
        rank: The rank `k` of the gradient approximation.
        min_size: Kernels with fewer entries are left to the inner optimizer.
        power_iterations: Power iterations per step (1 is the streaming
            method; more tracks a fast-moving subspace better).
        exclude: Substrings of variable paths (case-insensitive) never
            covered.
        seed: Seed of the random initial bases.
        name: Name of the wrapper.

    Example:

    >>> model.compile(optimizer=LowRankGradients(keras.optimizers.Adam(1e-3), rank=8),
    ...               loss="mse")                           # doctest: +SKIP
    """

    def __init__(self, optimizer, rank=4, min_size=4096, power_iterations=1,
                 exclude=DEFAULT_EXCLUDE, seed=0, name=None, **kwargs):
        if kwargs:
            raise ValueError(
                "LowRankGradients does not take optimizer arguments; set them on "
                f"the inner optimizer. Received: {sorted(kwargs)}"
            )
        super().__init__(learning_rate=0.0, name=name)
        rank = check_positive_int("rank", rank)
        if isinstance(min_size, bool) or int(min_size) != min_size or min_size < 0:
            raise ValueError(
                f"`min_size` must be a non-negative integer. Received: {min_size!r}"
            )
        power_iterations = check_positive_int("power_iterations", power_iterations)
        if isinstance(exclude, str):
            exclude = (exclude,)
        self.inner_optimizer = keras.optimizers.get(optimizer)
        if isinstance(self.inner_optimizer, LowRankGradients):
            raise ValueError("`optimizer` is already a LowRankGradients.")
        self.rank = int(rank)
        self.min_size = int(min_size)
        self.power_iterations = int(power_iterations)
        self.exclude = tuple(str(e) for e in exclude)
        self.seed = seed

    def covers(self, variable):
        """Whether `variable` gets a low-rank gradient."""
        shape = tuple(variable.shape)
        path = getattr(variable, "path", variable.name).lower()
        return (
            getattr(variable, "trainable", True)
            and len(shape) == 2
            and shape[0] * shape[1] >= self.min_size
            and min(shape) > self.rank
            and not any(e.lower() in path for e in self.exclude)
        )

    @tracking.no_automatic_dependency_tracking
    def build(self, var_list):
        super().build(var_list)
        self._low_rank = {}
        inner_variables = []
        for i, variable in enumerate(var_list):
            if not self.covers(variable):
                inner_variables.append(variable)
                continue
            rows, cols = variable.shape
            left = rows >= cols
            long, short = (rows, cols) if left else (cols, rows)
            name = variable.path.replace("/", "_")
            basis = self.add_variable(
                shape=(long, self.rank), dtype="float32",
                initializer=keras.initializers.Orthogonal(seed=_seed(self.seed, i)),
                name=f"{name}_basis",
            )
            shadow = self.add_variable(
                shape=(self.rank, short) if left else (short, self.rank),
                dtype=variable.dtype, initializer="zeros", name=f"{name}_coordinates",
            )
            self._low_rank[i] = (left, basis, shadow)
            inner_variables.append(shadow)
        self.inner_optimizer.build(inner_variables)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "Call `optimizer.build(variables)` or pass `trainable_variables` "
                    "on the first call of `apply`."
                )
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
            self.built = True
        variables = self._trainable_variables
        if trainable_variables is not None:
            trainable_variables = list(trainable_variables)
            self._check_variables_are_known(trainable_variables)
            indices = [self._get_variable_index(v) for v in trainable_variables]
        else:
            indices = list(range(len(variables)))
        grads = list(grads)
        if len(grads) != len(indices):
            raise ValueError(
                f"Received {len(grads)} gradients for {len(indices)} variables."
            )
        learning_rate = self.inner_optimizer.learning_rate
        inner_grads, inner_variables, covered = [], [], []
        for grad, i in zip(grads, indices):
            if i not in self._low_rank:
                inner_grads.append(grad)
                inner_variables.append(variables[i])
                continue
            if grad is None:
                continue
            left, basis, shadow = self._low_rank[i]
            g = ops.cast(ops.convert_to_tensor(grad), "float32")
            g = g if left else ops.transpose(g)  # (long, short)
            q = tracked_basis(g, basis, self.power_iterations)
            basis.assign(q)
            coordinates = ops.matmul(ops.transpose(q), g)  # (rank, short)
            if not left:
                coordinates = ops.transpose(coordinates)
            shadow.assign(ops.zeros(shadow.shape, dtype=shadow.dtype))
            inner_grads.append(ops.cast(coordinates, shadow.dtype))
            inner_variables.append(shadow)
            covered.append((variables[i], left, q, shadow))
        self.inner_optimizer.apply(inner_grads, inner_variables)
        decay = self.inner_optimizer.weight_decay
        for variable, left, q, shadow in covered:
            update = ops.matmul(q, shadow) if left else ops.matmul(shadow, ops.transpose(q))
            value = variable + ops.cast(update, variable.dtype)
            if decay:
                rate = ops.cast(learning_rate, variable.dtype) * ops.cast(decay, variable.dtype)
                if self.inner_optimizer._use_weight_decay(variable):
                    value = value - rate * variable
            if variable.constraint is not None:
                value = variable.constraint(value)
            variable.assign(value)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(
            [v for i, v in enumerate(self._trainable_variables) if i not in self._low_rank]
        )

    def state_bytes(self):
        """Bytes of every optimizer variable (bases, shadows, inner state)."""
        return int(sum(_size(v.shape) * _itemsize(v.dtype) for v in self.variables))

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": serialization_lib.serialize_keras_object(self.inner_optimizer),
            "rank": self.rank,
            "min_size": self.min_size,
            "power_iterations": self.power_iterations,
            "exclude": list(self.exclude),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = serialization_lib.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        return cls(optimizer, **config)


def tracked_basis(g, basis, power_iterations=1):
    """One streaming step: `orth(g g^T basis)` with stable column signs.

    Args:
        g: The gradient `(long, short)`, float32.
        basis: The previous orthonormal basis `(long, k)`.
        power_iterations: Multiplications by `g g^T` before orthonormalising
            (each followed by a QR).

    Returns:
        The new basis `(long, k)`; the previous one if `g` is all zeros.
    """
    previous = ops.convert_to_tensor(basis)
    energy = ops.sum(g * g)
    q = previous
    for _ in range(power_iterations):
        # a small pull towards the previous basis keeps k independent
        # directions when the gradient's rank is below k
        y = ops.matmul(g, ops.matmul(ops.transpose(g), q)) + 1e-6 * energy * q
        q, r = ops.qr(y, mode="reduced")
        signs = ops.sign(ops.diagonal(r))
        q = q * ops.where(signs == 0, ops.ones_like(signs), signs)
    usable = ops.logical_and(energy > 0, ops.all(ops.isfinite(q)))
    return ops.where(usable, q, previous)


def _seed(seed, index):
    return None if seed is None else int(seed) * 1_000_003 + index


def _size(shape):
    size = 1
    for d in shape:
        size *= int(d)
    return size


def _itemsize(dtype):
    import numpy as np

    dtype = keras.backend.standardize_dtype(dtype)
    return 1 if dtype == "bool" else np.dtype(dtype).itemsize
