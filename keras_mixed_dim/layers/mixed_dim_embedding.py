"""The `MixedDimEmbedding` layer (arXiv:1909.11810), on every Keras backend."""

import warnings

import keras
import numpy as np
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers
from keras import saving

from keras_mixed_dim.backend import dense_gradient
from keras_mixed_dim.budgets import COUNT_BYTES
from keras_mixed_dim.budgets import FLOAT_BYTES
from keras_mixed_dim.budgets import REMAP_BYTES
from keras_mixed_dim.budgets import resolve_budget
from keras_mixed_dim.budgets import uniform_bytes
from keras_mixed_dim.budgets import warn_budget_deprecated
from keras_mixed_dim.budgets import refuse_budget_with_new
from keras_mixed_dim.backend import take_rows
from keras_mixed_dim.backend.row_gradients import flag_table
from keras_mixed_dim.layers.ids import valid_int_ids
from keras_mixed_dim.layers.lookup import IdLookupLayer
from keras_mixed_dim.layers.lookup import add_lookup_counts
from keras_mixed_dim.layers.lookup import bag_coefficients
from keras_mixed_dim.layers.lookup import rebuild_variables
from keras_mixed_dim.layers.lookup import reduce_bag
from keras_mixed_dim.planning import BlockPlan
from keras_mixed_dim.planning import plan_blocks
from keras_mixed_dim.planning import rank_ids
from keras_mixed_dim.planning import ranks_of_ids
from keras_mixed_dim.planning.convert import convert_weights

# Leading blocks whose tables hold at most this many entries in all are
# projected whole before the lookup, so together they become one gather from
# a single `rows x output_dim` table. Later blocks gather first and project
# only the looked-up rows, all in one matmul. On a CPU a skinny projection of
# more rows than this costs more than the extra gather it saves. The cut
# depends on the plan only, never on the batch, so an id always takes the
# same arithmetic path.
PROJECT_FIRST_MAX_ENTRIES = 1 << 14


@saving.register_keras_serializable(package="keras_mixed_dim")
class MixedDimEmbedding(IdLookupLayer):
    """Mixed-dimension embedding: frequent ids get wide rows, rare ids narrow.

    Ids are ranked by frequency and cut into blocks. Block `i` stores its
    ids in a table of `rows_i x dim_i` and maps them to the common
    `output_dim` with a `dim_i x output_dim` projection (none when `dim_i ==
    output_dim`). Dims follow the power rule `dim_i ~ p_i**alpha` of Ginart
    et al., "Mixed Dimension Embeddings with Application to Memory-Efficient
    Recommendation Systems" (arXiv:1909.11810).

    A block whose plan says `storage="qr"` (MD + QR, see
    `plan_blocks(qr_min_rows=...)`) stores its rows as a quotient-remainder
    pair, weights `block_{i}_quotient` and `block_{i}_remainder`: row `r`
    of the block is `Q[r // m] * R[r % m]` (arXiv:1909.02107), both tables
    initialized zero-mean at `QREmbedding`'s "mult" scale. Re-ranking and
    re-planning refuse such plans.

    Example:

    >>> counts = np.bincount(np.random.zipf(1.2, 10_000) % 1000, minlength=1000)
    >>> layer = MixedDimEmbedding(1000, 32, counts=counts, alpha=0.3)
    >>> layer(np.array([[3], [999]])).shape
    (2, 1, 32)

    Ids outside `[0, input_dim)` (negative ones included), and float ids
    that are not whole numbers (NaN too), map to an all-zero vector on every
    backend and get no gradient; they never wrap around or read another
    id's row. String or boolean ids raise a `TypeError`. Numpy ids passed
    to the layer are range-checked on the host, before a backend could
    truncate int64 to int32 (JAX without `jax_enable_x64` does); see
    `keras_mixed_dim.models.IdSafeModel` for ids that go through a model's
    `keras.Input` cast first.

    Args:
        input_dim: Integer. Size of the vocabulary.
        output_dim: Integer. The common dimension of every output vector
            (the base dimension).
        plan: Optional `BlockPlan` (or its config dict). When given, the
            planning arguments below except `counts` are ignored.
        counts: Optional per-id counts. Ids are ranked by them and the layer
            keeps an id -> rank table. Without counts, ids are taken as
            already ranked by frequency (id 0 most frequent).
        num_blocks: Number of equal-probability-mass blocks.
        boundaries: Optional explicit block cut points in rank space.
        alpha: Temperature of the power rule; 0 gives every block
            `output_dim`.
        budget_bytes: Optional byte budget of everything the layer holds:
            float32 tables and projections, the id -> rank table and the
            frequency counts; by default the most popular block is
            `output_dim` wide. See `bytes`.
        budget_fraction: Alternative to `budget_bytes`: a fraction in
            (0, 1] of the uniform float32 table's bytes
            (`4 * input_dim * output_dim`), e.g. `0.0625`.
        round_dims: Round block dims to powers of two.
        combiner: None to return one vector per id (like `Embedding`), or
            `"sum"` / `"mean"` / `"sqrtn"` to reduce the last id axis (a bag
            of ids per example, like `EmbeddingBag`), weighted by the
            optional per-id `weights` as `tf.nn.safe_embedding_lookup_sparse`
            does. Padding (`mask_zero`) and out-of-range ids are left out of
            the bag; an empty bag gives zeros.
        embeddings_initializer: Initializer for the block tables.
        projection_initializer: Initializer for the block projections.
        embeddings_regularizer: Regularizer for the block tables.
        projection_regularizer: Regularizer for the block projections.
        embeddings_constraint: Constraint for the block tables.
        projection_constraint: Constraint for the block projections.
        mask_zero: Whether id 0 is padding to be masked out.
        count_frequencies: Count how often each id is looked up while
            training (never in inference or `predict`), for
            `FrequencyRecount`. Implies an id -> rank table. Exact counts
            are one int32 per id and saturate at `2**31 - 1` instead of
            overflowing; see `frequency_counts`.
        frequency_half_life: Optional half-life in training steps: counts
            decay by `0.5 ** (1 / half_life)` each step so the ranking
            follows drifting popularity (float32 counts).
        bag_size: Optional padded bag width for `tf.RaggedTensor` /
            `tf.SparseTensor` ids (TensorFlow): they are padded to
            `(batch, bag_size)` in the graph, and a longer bag keeps its
            first `bag_size` ids.
        budget: Deprecated (removed in 0.4.0): a number of parameters
            (tables plus projections; the id -> rank table and the counts
            not counted). Use `budget_bytes` or `budget_fraction`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Integer ids of any shape (rank >= 2 with a combiner), or on
            TensorFlow a rank-2 `tf.RaggedTensor` / `tf.SparseTensor` of
            bags (needs a combiner and `bag_size`).
        weights: Optional float per-id weights of the ids' shape (ragged or
            sparse like them); needs a combiner. Each frequency count is
            one lookup, whatever its weight.
        training: Whether the call is a training step; ids are counted only
            then.

    Returns:
        `inputs.shape + (output_dim,)` without a combiner, else
        `inputs.shape[:-1] + (output_dim,)`, in the layer's compute dtype.
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        plan=None,
        counts=None,
        num_blocks=4,
        boundaries=None,
        alpha=0.3,
        budget_bytes=None,
        budget_fraction=None,
        round_dims=False,
        combiner=None,
        embeddings_initializer="uniform",
        projection_initializer="glorot_uniform",
        embeddings_regularizer=None,
        projection_regularizer=None,
        embeddings_constraint=None,
        projection_constraint=None,
        mask_zero=False,
        count_frequencies=False,
        frequency_half_life=None,
        bag_size=None,
        budget=None,
        **kwargs,
    ):
        super().__init__(input_dim, output_dim, combiner=combiner,
                         mask_zero=mask_zero, bag_size=bag_size, **kwargs)
        if isinstance(plan, dict):
            plan = BlockPlan.from_config(plan)
        if frequency_half_life is not None and not (
            count_frequencies and float(frequency_half_life) > 0
        ):
            raise ValueError(
                "`frequency_half_life` needs count_frequencies=True and a value "
                f"> 0. Received: {frequency_half_life!r}"
            )
        counts_bytes = COUNT_BYTES * self.input_dim if count_frequencies else 0
        if budget is not None:
            warn_budget_deprecated(
                "MixedDimEmbedding", f"{budget!r} parameters (tables plus projections, "
                "not the id -> rank table or the counts)",
                "budget_bytes (every array the layer holds) or budget_fraction")
            refuse_budget_with_new(budget, budget_bytes, budget_fraction)
        if plan is None:
            with warnings.catch_warnings():
                # the layer warned about `budget` already
                warnings.simplefilter("ignore", DeprecationWarning)
                plan = plan_blocks(
                    self.input_dim,
                    self.output_dim,
                    counts=counts,
                    num_blocks=num_blocks,
                    boundaries=boundaries,
                    alpha=alpha,
                    budget_bytes=budget_bytes,
                    budget_fraction=budget_fraction,
                    budget=budget,
                    round_dims=round_dims,
                    remap=True if count_frequencies else None,
                    held_bytes=counts_bytes,
                )
        if not isinstance(plan, BlockPlan):
            raise ValueError(f"`plan` must be a BlockPlan. Received: {plan!r}")
        if count_frequencies and not plan.remapped:
            raise ValueError(
                "count_frequencies=True re-ranks ids, which needs a plan with an "
                "id -> rank table (remapped=True)."
            )
        if (plan.input_dim, plan.output_dim) != (self.input_dim, self.output_dim):
            raise ValueError(
                f"The plan is for {plan.input_dim} ids -> dim {plan.output_dim}, "
                f"but the layer has input_dim={self.input_dim}, "
                f"output_dim={self.output_dim}."
            )
        self._initial_ranks = None
        if counts is not None and plan.remapped:
            self._initial_ranks = ranks_of_ids(rank_ids(counts)).astype("int32")
        self.plan = plan
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.projection_initializer = initializers.get(projection_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.projection_regularizer = regularizers.get(projection_regularizer)
        self.embeddings_constraint = constraints.get(embeddings_constraint)
        self.projection_constraint = constraints.get(projection_constraint)
        self.count_frequencies = bool(count_frequencies)
        self.frequency_half_life = (
            None if frequency_half_life is None else float(frequency_half_life)
        )
        # Keep the planning arguments: re-planning from new counts reuses
        # them, so they are part of the config too.
        if budget is not None:
            # the same limit in bytes: a re-plan (always remapped) gets the
            # same dims as the parameters gave
            budget_bytes = (FLOAT_BYTES * float(budget) + counts_bytes
                            + (REMAP_BYTES * self.input_dim if plan.remapped else 0))
        elif budget_fraction is not None:
            budget_bytes = resolve_budget(
                budget_fraction=budget_fraction,
                uniform_bytes=uniform_bytes(self.input_dim, self.output_dim))
        self.planning_args = {
            "num_blocks": plan.num_blocks,
            "alpha": float(alpha),
            "budget_bytes": None if budget_bytes is None else float(budget_bytes),
            "round_dims": round_dims,
        }
        self._head_blocks = _count_project_first_blocks(plan)

    def build(self, input_shape=None):
        if self.built:
            return
        self.block_embeddings = []
        self.block_qr = []
        self.block_projections = []
        for i, block in enumerate(self.plan.blocks):
            if block.storage == "qr":
                # MD + QR: the block's rows are Q[r // m] * R[r % m]; both
                # tables start zero-mean at QREmbedding's "mult" scale.
                self.block_embeddings.append(None)
                self.block_qr.append(tuple(
                    flag_table(self.add_weight(
                        shape=shape,
                        initializer=_qr_initializer(),
                        regularizer=self.embeddings_regularizer,
                        constraint=self.embeddings_constraint,
                        name=f"block_{i}_{part}",
                    ))
                    for part, shape in (
                        ("quotient", (block.quotient_rows, block.dim)),
                        ("remainder", (block.num_collisions, block.dim)),
                    )
                ))
            else:
                self.block_qr.append(None)
                self.block_embeddings.append(
                    flag_table(self.add_weight(
                        shape=(block.rows, block.dim),
                        initializer=self.embeddings_initializer,
                        regularizer=self.embeddings_regularizer,
                        constraint=self.embeddings_constraint,
                        name=f"block_{i}_embeddings",
                    ))
                )
            self.block_projections.append(self._build_projection(i))
        self._build_remap()
        self.frequency_counts = None
        if self.count_frequencies:
            # On-read sync with sum aggregation: under a tf.distribute
            # strategy each replica adds its own lookups to its own copy (no
            # lost or doubled updates), and reading outside the replicas sums
            # the copies. Other backends ignore the synchronization flag.
            self.frequency_counts = keras.Variable(
                initializer="zeros",
                shape=(self.input_dim,),
                dtype="float32" if self.frequency_half_life else "int32",
                trainable=False,
                aggregation="sum",
                synchronization="on_read",
                name="frequency_counts",
            )
        self.built = True

    def _build_projection(self, index):
        """Block `index`'s `dim x output_dim` projection, or None without one."""
        if not self.plan.has_projection(index):
            return None
        return self.add_weight(
            shape=(self.plan.blocks[index].dim, self.output_dim),
            initializer=self.projection_initializer,
            regularizer=self.projection_regularizer,
            constraint=self.projection_constraint,
            name=f"block_{index}_projection",
        )

    def _build_remap(self):
        """The id -> rank table when the plan remaps ids (else None), holding
        the ranks a re-plan or a conversion passed in."""
        self.remap = None
        if not self.plan.remapped:
            return
        self.remap = self.add_weight(
            shape=(self.input_dim,),
            initializer=_IdentityRanks(),
            dtype="int32",
            trainable=False,
            name="remap",
        )
        if self._initial_ranks is not None:
            self.remap.assign(self._initial_ranks)
            self._initial_ranks = None

    @classmethod
    def from_embedding(cls, embedding, counts, name=None, return_report=False,
                       **kwargs):
        """A `MixedDimEmbedding` converted from a trained uniform table.

        Plans blocks from `counts` and gives each block the principal
        directions of its rows (exact, or through a subspace sketch for big
        blocks); with `alpha=0` the result equals the original exactly. See
        `keras_mixed_dim.compress.mixed_dim_from_embedding` for every
        argument (`alpha`, `num_blocks`, `budget_fraction`, `budget_bytes`,
        `sketch`, ...).

        Example:

        >>> table = keras.layers.Embedding(1000, 32)
        >>> table.build()
        >>> counts = np.random.default_rng(0).zipf(1.3, 1000)
        >>> layer = MixedDimEmbedding.from_embedding(table, counts, alpha=0.0)
        >>> layer(np.array([3, 999])).shape
        (2, 32)

        Args:
            embedding: A built `keras.layers.Embedding` or its weight array.
            counts: Per-id counts.
            name: Name of the new layer (default: the embedding's name).
            return_report: Also return the `ConversionReport`.
            **kwargs: Conversion arguments of
                `keras_mixed_dim.planning.convert.convert_weights`.

        Returns:
            A built `MixedDimEmbedding`, or `(layer, report)` with
            `return_report=True`.
        """
        layer_kwargs = {}
        if hasattr(embedding, "get_config") and hasattr(embedding, "input_dim"):
            if not getattr(embedding, "built", False):
                raise ValueError(
                    f"Embedding {embedding.name!r} is not built: it has no trained "
                    "weights to convert."
                )
            if getattr(embedding, "quantization_mode", None):
                raise ValueError(
                    f"Embedding {embedding.name!r} is quantized "
                    f"({embedding.quantization_mode}); convert the float model."
                )
            if getattr(embedding, "lora_enabled", False):
                raise ValueError(
                    f"Embedding {embedding.name!r} has LoRA enabled; merge it first."
                )
            weights = np.asarray(ops.convert_to_numpy(embedding.embeddings))
            name = name or embedding.name
            layer_kwargs = {
                "mask_zero": bool(getattr(embedding, "mask_zero", False)),
                "embeddings_regularizer": getattr(embedding, "embeddings_regularizer",
                                                  None),
                "dtype": embedding.dtype_policy,
            }
        else:
            weights = np.asarray(embedding)
        counts = np.asarray(ops.convert_to_numpy(counts) if not isinstance(
            counts, np.ndarray) and hasattr(counts, "shape") else counts)
        converted = convert_weights(weights, counts, **kwargs)
        input_dim, output_dim = weights.shape
        # always the float layer, also when called on a subclass
        layer = MixedDimEmbedding(
            input_dim, output_dim, plan=converted.plan,
            counts=counts if converted.plan.remapped else None,
            alpha=converted.report.alpha, name=name, **layer_kwargs,
        )
        layer.build()
        for variable, table in zip(layer.block_embeddings, converted.tables):
            variable.assign(table)
        for variable, projection in zip(layer.block_projections, converted.projections):
            if variable is not None:
                variable.assign(projection)
        if return_report:
            return layer, converted.report
        return layer

    def rebuild(self, plan, ranks):
        """Replaces the layer's variables with fresh ones for a new plan.

        Used by re-planning (`keras_mixed_dim.frequency.replan_layer`): the
        block tables and projections are created anew for `plan` (same
        `input_dim` / `output_dim`, remapped), the id -> rank table is set to
        `ranks`, and `frequency_counts` keeps its values. The model holding
        the layer must be recompiled, since its variables changed.
        """
        if not self.built:
            raise ValueError("Only a built layer can be rebuilt.")
        if (plan.input_dim, plan.output_dim) != (self.input_dim, self.output_dim):
            raise ValueError(
                f"The new plan is for {plan.input_dim} ids -> dim {plan.output_dim}; "
                f"the layer has {self.input_dim} -> {self.output_dim}."
            )
        if not plan.remapped:
            raise ValueError("A rebuilt layer needs a remapped plan.")
        counts = None
        if self.frequency_counts is not None:
            counts = ops.convert_to_numpy(self.frequency_counts)

        def new_plan():
            self.plan = plan
            self._head_blocks = _count_project_first_blocks(plan)
            self._initial_ranks = np.asarray(ranks, dtype="int32")

        rebuild_variables(self, new_plan)
        if counts is not None:
            self.frequency_counts.assign(counts)

    def _count(self, ids, valid):
        """Adds this batch's lookups to `frequency_counts` (decayed if set)."""
        ids = ops.reshape(ids, (-1,))
        valid = ops.reshape(valid, (-1,))
        if self.mask_zero:
            valid = ops.logical_and(valid, ops.not_equal(ids, 0))
        add_lookup_counts(self.frequency_counts, ops.clip(ids, 0, self.input_dim - 1),
                          valid, self.frequency_half_life)

    def ranks(self, ids):
        """Rank of each id, or -1 for ids outside `[0, input_dim)`."""
        ids, valid = valid_int_ids(ids, self.input_dim, self.name)
        return self._ranks_of_valid(ids, valid)

    def _ranks_of_valid(self, ids, valid):
        if self.remap is None:
            return ids
        safe_ids = ops.clip(ids, 0, self.input_dim - 1)
        ranks = ops.cast(ops.take(self.remap, safe_ids, axis=0), ids.dtype)
        return ops.where(valid, ranks, ops.cast(-1, ranks.dtype))

    def call(self, inputs, weights=None, training=None):
        inputs, weights = self.checked_inputs(inputs, weights)
        ids, valid = valid_int_ids(inputs, self.input_dim, self.name)
        if training and self.frequency_counts is not None:
            self._count(ids, valid)
        ranks = self._ranks_of_valid(ids, valid)
        if self.mask_zero and self.combiner is not None:
            ranks = ops.where(ops.equal(ids, 0), ops.cast(-1, ranks.dtype), ranks)
        outputs = self.lookup_ranks(ranks, weights)
        return ops.cast(outputs, self.compute_dtype)

    def lookup_ranks(self, ranks, weights=None):
        """Vectors of the given ranks (-1 gives zeros), reduced by the combiner.

        Args:
            ranks: Integer tensor of ranks in `[-1, input_dim)`.
            weights: Optional float32 per-id weights (with a combiner).

        Returns:
            A float32 tensor of shape `ranks.shape + (output_dim,)`, or
            without the last id axis when the layer has a combiner.
        """
        plan = self.plan
        outputs = None
        coefficients = None
        if self.combiner is not None:
            # the bag weighting is linear, so each block reduces its own ids
            # with the bag's coefficients before its projection
            coefficients = bag_coefficients(ops.greater_equal(ranks, 0), weights,
                                            self.combiner)
        if self._head_blocks:
            # Ranks outside the head read the all-zero row appended at the
            # end of the head table, so no float select is needed: ranks
            # past the head are capped at that row's index, and a floor mod
            # sends -1 (an invalid id) there too. Rows are never negative,
            # so the gather needs no wrap-around handling (`take_rows`).
            head_rows = int(plan.offsets[self._head_blocks])
            rows = ranks if head_rows >= self.input_dim else ops.minimum(ranks, head_rows)
            rows = ops.mod(rows, head_rows + 1)
            outputs = take_rows(dense_gradient(self._head_table()), rows)
            if self.combiner is not None:
                outputs = reduce_bag(outputs, coefficients)
        projected, projections = [], []
        for i in range(self._head_blocks, plan.num_blocks):
            start, stop = int(plan.offsets[i]), int(plan.offsets[i + 1])
            # Ranks are below input_dim, so the last block needs no upper
            # bound and the first no shift: each op skipped is a kernel
            # launch saved per table and request when serving batch 1.
            member = ops.greater_equal(ranks, start)
            rows = ranks - start if start else ranks
            rows = ops.maximum(rows, 0)
            if stop < self.input_dim:
                member = ops.logical_and(member, ops.less(ranks, stop))
                rows = ops.minimum(rows, stop - start - 1)
            values = self._block_rows(i, rows)
            values = ops.where(ops.expand_dims(member, -1), values, 0.0)
            # Reducing before projecting is exact (the projection is linear)
            # and does the matmul once per bag instead of once per id.
            if self.combiner is not None:
                values = reduce_bag(values, coefficients)
            if self.block_projections[i] is None:
                outputs = values if outputs is None else ops.add(outputs, values)
            else:
                projected.append(values)
                projections.append(self.block_projections[i])
        if projected:
            # One matmul for all projected blocks: [v_1 .. v_k] @ [P_1; ..; P_k].
            if len(projected) > 1:
                values = ops.matmul(
                    ops.concatenate(projected, axis=-1),
                    ops.concatenate(projections, axis=0),
                )
            else:
                values = ops.matmul(projected[0], projections[0])
            outputs = values if outputs is None else ops.add(outputs, values)
        return outputs

    def _gather_block(self, index, rows):
        """Rows of block `index`'s table (a hook for quantized tables)."""
        return take_rows(self.block_embeddings[index], rows)

    def _head_table(self):
        """The first blocks projected to `output_dim`, in rank order, then a
        row of zeros for every rank outside them."""
        parts = []
        for i in range(self._head_blocks):
            part = self._block_table(i)
            if self.block_projections[i] is not None:
                part = ops.matmul(part, self.block_projections[i])
            parts.append(part)
        parts.append(ops.zeros((1, self.output_dim), dtype=parts[0].dtype))
        return ops.concatenate(parts, axis=0)

    def block_outputs(self, index):
        """All output vectors of block `index` in rank order: table x projection."""
        table = self._block_table(index)
        projection = self.block_projections[index]
        return table if projection is None else ops.matmul(table, projection)

    def _block_rows(self, index, rows):
        """Rows `rows` (block-local, valid) of block `index`, before projection."""
        if self.block_qr[index] is None:
            return self._gather_block(index, rows)
        quotient, remainder = self.block_qr[index]
        m = self.plan.blocks[index].num_collisions
        return ops.multiply(
            take_rows(quotient, ops.floor_divide(rows, m)),
            take_rows(remainder, ops.mod(rows, m)),
        )

    def _block_table(self, index):
        """All rows of block `index` (a QR block's are composed)."""
        if self.block_qr[index] is None:
            return self.block_embeddings[index]
        rows = ops.arange(self.plan.blocks[index].rows, dtype="int32")
        return self._block_rows(index, rows)

    @property
    def params(self):
        """Float parameters of the plan: block tables and projections."""
        return self.plan.params

    @property
    def bytes(self):
        """Bytes of everything the layer holds: float32 tables and
        projections, the int32 id -> rank table and the frequency counts.
        Known before the layer is built (from its plan)."""
        counts = COUNT_BYTES * self.input_dim if self.count_frequencies else 0
        return int(self.plan.bytes + counts)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "plan": self.plan.get_config(),
                **self.planning_args,
                "embeddings_initializer": initializers.serialize(
                    self.embeddings_initializer
                ),
                "projection_initializer": initializers.serialize(
                    self.projection_initializer
                ),
                "embeddings_regularizer": regularizers.serialize(
                    self.embeddings_regularizer
                ),
                "projection_regularizer": regularizers.serialize(
                    self.projection_regularizer
                ),
                "embeddings_constraint": constraints.serialize(
                    self.embeddings_constraint
                ),
                "projection_constraint": constraints.serialize(
                    self.projection_constraint
                ),
                "count_frequencies": self.count_frequencies,
                "frequency_half_life": self.frequency_half_life,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**legacy_planning_config(config))


def legacy_planning_config(config):
    """`config` with a pre-0.3 `budget` (parameters) turned into the
    `budget_bytes` it equals, so old saved models load without a warning
    (their plan is in the config; the budget only matters to re-plans)."""
    config = dict(config)
    if "budget" not in config or config.get("plan") is None:
        # without a plan the budget plans the layer: it warns as given
        return config
    budget = config.pop("budget")
    if budget is not None and config.get("budget_bytes") is None:
        plan = config["plan"]
        plan = BlockPlan.from_config(plan) if isinstance(plan, dict) else plan
        input_dim = int(config["input_dim"])
        held = COUNT_BYTES * input_dim if config.get("count_frequencies") else 0
        remap = REMAP_BYTES * input_dim if plan is not None and plan.remapped else 0
        config["budget_bytes"] = FLOAT_BYTES * float(budget) + held + remap
    return config


def _count_project_first_blocks(plan):
    """How many leading blocks are small enough to project before the lookup."""
    count, entries = 0, 0
    for block in plan.blocks:
        entries += block.rows * block.dim
        if entries > PROJECT_FIRST_MAX_ENTRIES:
            break
        count += 1
    return count


def _qr_initializer():
    from keras_mixed_dim.layers.qr_embedding import EMBEDDING_STD

    limit = (3.0 * EMBEDDING_STD) ** 0.5
    return initializers.RandomUniform(-limit, limit)


class _IdentityRanks(initializers.Initializer):
    """`arange(n)`: the remap of a vocabulary that is already ranked."""

    def __call__(self, shape, dtype=None):
        return ops.arange(shape[0], dtype=dtype or "int32")
