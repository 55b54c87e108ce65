"""`FrequencyRecount`: re-rank ids into blocks from the counts seen in training."""

import keras
import numpy as np

from keras_mixed_dim.backend import model_variable_scope
from keras_mixed_dim.frequency.replan import replan_layer
from keras_mixed_dim.frequency.rerank import rerank_layer
from keras_mixed_dim.layers.slots import slot_initial_value
from keras_mixed_dim.layers.slots import slot_variables
from keras_mixed_dim.frequency.stacked import replan_stacked
from keras_mixed_dim.frequency.stacked import rerank_stacked
from keras_mixed_dim.layers import MixedDimEmbedding
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding


class FrequencyRecount(keras.callbacks.Callback):
    """Re-ranks the ids of counting embedding layers during training.

    It works on every `MixedDimEmbedding` built with
    `count_frequencies=True` and on every counting feature of a
    `StackedEmbedding` (each feature as if it were its own layer, named by
    the layer's `feature_names`: a stacked DLRM logs the same keys as the
    per-feature one).

    Popularity drifts (new items, trends), so the ids that deserve the wide
    blocks change. This callback reads each layer's `frequency_counts` (build
    the layers with `count_frequencies=True`, optionally with a
    `frequency_half_life` so old lookups fade) and re-ranks the ids into the
    plan's fixed blocks; shapes never change, so compiled train steps keep
    running without a retrace. Ids that stay in their block keep their rows
    bit for bit; ids that change block get the least-squares warm start of
    their old output; their optimizer slots are reset (see `rerank_layer`).

    What it did goes into the epoch logs (so into `History`, the progress bar
    and TensorBoard): `<layer>_ids_moved`, `<layer>_warm_start_error` and,
    per block `i`, `<layer>_block<i>_mass_before` / `_mass_after`, the share
    of counted lookups the block's ids held before and after.

    With `replan=True` the callback instead re-plans at each epoch end:
    block sizes and dims are recomputed from the counts with the planner,
    the variables are rebuilt, each new block is warm-started from the
    principal directions of its ids' old outputs (sketched for big blocks,
    see `replan_layer`), and the training step is rebuilt with a fresh
    optimizer of the same configuration (its slots restart from zero; the
    iteration counts, the wrapped optimizers' too, carry over). Logs then hold
    `<layer>_warm_start_error`, `<layer>_params` and the new block masses.

    Args:
        every_n_steps: Re-rank every this many training steps; None (the
            default) re-ranks at the end of each epoch.
        layer_names: Names of the layers to re-rank; default every
            `MixedDimEmbedding` in the model that counts frequencies and
            every counting feature of a `StackedEmbedding`. A
            `StackedEmbedding`'s name selects all its counting features, a
            feature name that feature alone.
        replan: Re-plan (new shapes) at epoch ends instead of re-ranking.
        sketch_threshold: With `replan`, blocks of more rows get their
            directions from an OSNAP sketch rather than an exact Gram matrix.

    Example:

    >>> layer = MixedDimEmbedding(10_000, 32, count_frequencies=True,
    ...                           plan=plan_blocks(10_000, 32, remap=True))
    >>> model.fit(x, y, epochs=5,                           # doctest: +SKIP
    ...           callbacks=[FrequencyRecount(every_n_steps=1000)])
    """

    def __init__(self, every_n_steps=None, layer_names=None, replan=False,
                 sketch_threshold=200_000):
        super().__init__()
        if replan and every_n_steps is not None:
            raise ValueError("`replan=True` runs at epoch ends; leave every_n_steps None.")
        self.replan = bool(replan)
        self.sketch_threshold = sketch_threshold
        if every_n_steps is not None and (int(every_n_steps) != every_n_steps
                                          or every_n_steps < 1):
            raise ValueError(
                f"`every_n_steps` must be an integer >= 1 or None. "
                f"Received: {every_n_steps!r}"
            )
        self.every_n_steps = every_n_steps
        self.layer_names = None if layer_names is None else list(layer_names)
        self.reports = []
        self._steps = 0
        self._last = {}

    def _targets(self):
        """`[(name, layer, feature)]`: feature None for a `MixedDimEmbedding`,
        else the index of a `StackedEmbedding`'s counting feature."""
        found, stacks = [], {}
        for layer in _walk(self.model):
            if isinstance(layer, MixedDimEmbedding) and layer.count_frequencies:
                found.append((layer.name, layer, None))
            elif isinstance(layer, StackedEmbedding) and layer.count_frequencies:
                names = layer.feature_names
                stacks[layer.name] = [(names[f], layer, f)
                                      for f in layer.counting_features]
                found.extend(stacks[layer.name])
        if self.layer_names is None:
            if not found:
                raise ValueError(
                    "FrequencyRecount found no MixedDimEmbedding (or StackedEmbedding "
                    "feature) with count_frequencies=True in the model."
                )
            return found
        by_name = {name: [(name, layer, f)] for name, layer, f in found}
        by_name.update(stacks)
        missing = [n for n in self.layer_names if n not in by_name]
        if missing:
            raise ValueError(
                f"FrequencyRecount: no counting MixedDimEmbedding or StackedEmbedding "
                f"(feature) named {missing}; counting layers and features are "
                f"{sorted(by_name)}."
            )
        targets = []
        for name in self.layer_names:
            targets.extend(t for t in by_name[name] if t not in targets)
        return targets

    def _layers(self):
        """The layers re-ranked (each `StackedEmbedding` once)."""
        layers = []
        for _, layer, _ in self._targets():
            if all(layer is not seen for seen in layers):
                layers.append(layer)
        return layers

    def recount(self):
        """Re-ranks now; returns `{layer or feature name: RerankReport}`."""
        # On JAX the variables live in the trainer's state between epochs;
        # bring them back to the layers before reading or writing them.
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        optimizer = getattr(self.model, "optimizer", None)
        reports = {}
        for layer, names, features in _by_layer(self._targets()):
            if features is None:
                results = {names[0]: rerank_layer(layer, optimizer=optimizer)}
            else:
                results = dict(zip(names, rerank_stacked(
                    layer, features, optimizer=optimizer).values()))
            for name, report in results.items():
                reports[name] = report
                self._last.update(_as_logs(name, report))
        self.reports.append(reports)
        return reports

    def on_train_begin(self, logs=None):
        # fail before the first epoch, not after it: a missing counting
        # layer would otherwise cost a whole epoch of training
        self._layers()

    def on_train_batch_end(self, batch, logs=None):
        if self.every_n_steps is None:
            return
        self._steps += 1
        if self._steps % self.every_n_steps == 0:
            self.recount()

    def replan_now(self):
        """Re-plans every counting layer and rebuilds the training step."""
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        reports = {}
        optimizer = getattr(self.model, "optimizer", None)
        with model_variable_scope(self.model):
            for layer, names, features in _by_layer(self._targets()):
                if features is None:
                    report = replan_layer(layer, sketch_threshold=self.sketch_threshold,
                                          skip_if_unchanged=True)
                    if not report.rebuilt:
                        # same shapes: re-ranking keeps the optimizer state
                        report = rerank_layer(layer, optimizer=optimizer)
                    results = {names[0]: (report, layer.plan)}
                else:
                    replanned = replan_stacked(layer, features,
                                               sketch_threshold=self.sketch_threshold,
                                               skip_if_unchanged=True)
                    same = [f for f in features if not replanned[f].rebuilt]
                    if same:
                        # the optimizer is replaced anyway when a feature
                        # was rebuilt; otherwise its slots follow the rows
                        rebuilt = len(same) < len(features)
                        replanned.update(rerank_stacked(
                            layer, same, optimizer=None if rebuilt else optimizer))
                    results = {name: (replanned[f], layer.plans[f])
                               for name, f in zip(names, features)}
                for name, (report, plan) in results.items():
                    if not getattr(report, "rebuilt", False):
                        self._last.update(_as_logs(name, report))
                    else:
                        self._last[f"{name}_warm_start_error"] = report.warm_start_error
                        for i, block in enumerate(report.new_plan.blocks):
                            self._last[f"{name}_block{i}_mass_after"] = block.mass
                    self._last[f"{name}_params"] = float(plan.params)
                    reports[name] = report
            if any(getattr(r, "rebuilt", False) for r in reports.values()):
                _rebuild_training(self.model)
        self.reports.append(reports)
        return reports

    def on_epoch_end(self, epoch, logs=None):
        if self.replan:
            self.replan_now()
        elif self.every_n_steps is None:
            self.recount()
        if logs is not None:
            logs.update(self._last)


def _by_layer(targets):
    """`(layer, names, features)` per layer, features None for a
    `MixedDimEmbedding`, in the order of `targets`."""
    groups = []
    for name, layer, feature in targets:
        for entry in groups:
            if entry[0] is layer and feature is not None:
                entry[1].append(name)
                entry[2].append(feature)
                break
        else:
            groups.append((layer, [name], None if feature is None else [feature]))
    return groups


def _as_logs(name, report):
    logs = {
        f"{name}_ids_moved": float(report.ids_moved),
        f"{name}_warm_start_error": report.warm_start_error,
    }
    for i, (before, after) in enumerate(zip(report.mass_before, report.mass_after)):
        logs[f"{name}_block{i}_mass_before"] = before
        logs[f"{name}_block{i}_mass_after"] = after
    return logs


def _rebuild_training(model):
    """A fresh optimizer over the new variables and retraced steps.

    Every compiled function of the model captured the old variables (on
    TensorFlow a `tf.function` holds them), so the train, test and predict
    functions are all dropped: `fit`'s validation, `evaluate` and `predict`
    rebuild theirs on next use and see the new variables.
    """
    old = model.optimizer
    optimizer = old.__class__.from_config(old.get_config())
    optimizer.build(model.trainable_variables)
    optimizer.iterations.assign(old.iterations)
    # A wrapper's inner optimizers count their own steps, which their
    # learning-rate schedules read (`SparseRowOptimizer.dense_optimizer`,
    # `LossScaleOptimizer.inner_optimizer`).
    for attribute in ("dense_optimizer", "inner_optimizer"):
        inner_old = getattr(old, attribute, None)
        inner_new = getattr(optimizer, attribute, None)
        if inner_old is not None and inner_new is not None:
            inner_new.iterations.assign(inner_old.iterations)
            deeper = getattr(inner_old, "dense_optimizer", None)
            if deeper is not None:
                inner_new.dense_optimizer.iterations.assign(deeper.iterations)
    _restart_slots(optimizer, model.trainable_variables)
    model.optimizer = optimizer
    model.make_train_function(force=True)
    model.test_function = None
    model.predict_function = None
    if hasattr(model, "_jax_state_synced"):
        # the next step must read the new variables, not the old state
        model._jax_state_synced = True


def _restart_slots(optimizer, variables):
    """Slots that must agree with the weights they start from (FTRL's
    `linear`, see `SparseRowOptimizer.reset_slot_value`) set from them."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if getattr(optimizer, "reset_slot_value", None) is None:
        return
    for variable in variables:
        if len(variable.shape) != 2:
            continue
        for slot in slot_variables(optimizer, variable):
            fill = slot_initial_value(optimizer, slot)
            if callable(fill):
                slot.assign(fill(np.asarray(keras.ops.convert_to_numpy(variable))))


def _walk(layer):
    yield layer
    for child in getattr(layer, "_layers", []):
        yield from _walk(child)
