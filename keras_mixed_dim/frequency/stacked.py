"""Re-ranking and re-planning the counting features of a `StackedEmbedding`.

Each feature is handled exactly as its own `MixedDimEmbedding` would be: its
blocks, ranks and optimizer slots are read out of the stacked variables at
their row offsets, the per-table algorithms of `rerank` / `replan` run on
them (`rerank_arrays`, `replan_arrays`), and the results are written back at
the same offsets (re-ranking) or into rebuilt variables (re-planning, where
block shapes change).
"""

import numpy as np
from keras import ops

from keras_mixed_dim.budgets import COUNT_BYTES
from keras_mixed_dim.frequency.replan import replan_arrays
from keras_mixed_dim.frequency.rerank import LayerSnapshot
from keras_mixed_dim.frequency.rerank import rerank_arrays
from keras_mixed_dim.layers.slots import slot_initial_value
from keras_mixed_dim.layers.slots import slot_variables
from keras_mixed_dim.sketch import MAX_ERROR_RATIO


def _features(layer, features):
    """The counting features to work on (default: all of them), checked."""
    if not layer.built:
        raise ValueError(f"Layer {layer.name!r} is not built yet.")
    counting = layer.counting_features
    if features is None:
        if not counting:
            raise ValueError(
                f"Layer {layer.name!r} has no feature that counts frequencies: build "
                "it with count_frequencies=True (for all features or some).")
        return list(counting)
    features = [layer._check_feature(f) for f in features]
    for f in features:
        if not layer.plans[f].remapped:
            raise ValueError(
                f"Feature {f} ({layer.feature_names[f]!r}) of layer {layer.name!r} has "
                "no id -> rank table; re-ranking needs a plan with remapped=True "
                "(count_frequencies=True gives one).")
    return features


def _counts(layer, feature, counts):
    if counts is None or feature not in counts:
        return layer.feature_counts(feature)
    values = np.asarray(counts[feature], np.float64)
    size = int(layer.input_dims[feature])
    if values.shape != (size,):
        raise ValueError(
            f"Counts of feature {feature} must have {size} entries. Received shape "
            f"{values.shape}.")
    return values


def _snapshot(layer, feature, arrays):
    tables, projections = layer.feature_arrays(feature, arrays["tables"],
                                               arrays["projections"])
    start = int(layer._remap_starts()[feature])
    ranks = arrays["remap"][start:start + int(layer.input_dims[feature])]
    return LayerSnapshot.from_arrays(layer.plans[feature], ranks, tables, projections)


def rerank_stacked(layer, features=None, counts=None, optimizer=None):
    """Re-ranks features of a `StackedEmbedding` by their counts.

    Each feature gets exactly what `rerank_layer` does to a
    `MixedDimEmbedding` of the same weights: ids re-sorted by count into
    the plan's fixed blocks, rows of ids that stay kept bit for bit, moved
    ids warm-started by least squares, and optimizer slots of the stacked
    tables moved along (reset for moved ids) within the feature's rows.
    Shapes never change.

    Args:
        layer: A built `StackedEmbedding`.
        features: Feature indices (default: every counting feature).
        counts: Optional `{feature: per-id counts}`; features not in it use
            their own `frequency_counts`.
        optimizer: Optional optimizer whose slots for the tables follow the
            rows.

    Returns:
        `{feature: RerankReport}`.

    Example:

    >>> stacked = StackedEmbedding([plan_blocks(1000, 16, remap=True), 50], 16,
    ...                            count_frequencies=[True, False])
    >>> stacked.build()
    >>> reports = rerank_stacked(stacked, counts={0: np.arange(1000)})
    >>> sorted(reports)
    [0]
    """
    features = _features(layer, features)
    arrays = layer.numpy_weights()
    slots = [slot_variables(optimizer, t) for t in layer.tables]
    slot_arrays = [[np.array(ops.convert_to_numpy(s)) for s in group] for group in slots]
    slot_fills = [[slot_initial_value(optimizer, s) for s in group] for group in slots]
    reports = {}
    for f in features:
        feature_counts = _counts(layer, f, counts)
        members = layer.feature_members(f)
        plan = layer.plans[f]
        block_slots = [
            [s[offset:offset + plan.blocks[i].rows] for s in slot_arrays[g]]
            for i, (g, _, offset) in enumerate(members)
        ]
        new_tables, new_slots, new_ranks, report = rerank_arrays(
            _snapshot(layer, f, arrays), feature_counts, block_slots,
            [slot_fills[g] for g, _, _ in members])
        for i, (g, _, offset) in enumerate(members):
            rows = plan.blocks[i].rows
            arrays["tables"][g][offset:offset + rows] = new_tables[i]
            for target, value in zip(slot_arrays[g], new_slots[i]):
                target[offset:offset + rows] = value
        start = int(layer._remap_starts()[f])
        arrays["remap"][start:start + plan.input_dim] = new_ranks
        reports[f] = report
    for variable, value in zip(layer.tables, arrays["tables"]):
        variable.assign(value)
    for group, values in zip(slots, slot_arrays):
        for variable, value in zip(group, values):
            variable.assign(value)
    layer.remap.assign(arrays["remap"].astype("int32"))
    return reports


def replan_stacked(layer, features=None, counts=None, sketch_threshold=200_000,
                   sketch_rows=None, seed=0, skip_if_unchanged=False, sketch="osnap",
                   max_error_ratio=MAX_ERROR_RATIO):
    """Re-plans features of a `StackedEmbedding` from their counts.

    Each feature is re-planned as `replan_layer` re-plans a
    `MixedDimEmbedding` of the same weights and planning settings (the
    layer's `planning_args[f]`); then, if any feature's block shapes
    changed, the stacked variables are rebuilt for the new plans (every
    other feature keeps its weights). The model holding the layer must be
    recompiled afterwards (`FrequencyRecount(replan=True)` does it).

    Args:
        layer: A built `StackedEmbedding`.
        features: Feature indices (default: every counting feature).
        counts: Optional `{feature: per-id counts}`; default the features'
            own counts.
        sketch_threshold, sketch_rows, seed, sketch, max_error_ratio,
        skip_if_unchanged: As `replan_layer`'s, per feature; a feature whose
            new plan keeps its shapes is left untouched with
            `skip_if_unchanged` (its report says `rebuilt=False`).

    Returns:
        `{feature: ReplanReport}`.

    Example:

    >>> stacked = StackedEmbedding([plan_blocks(1000, 16, remap=True), 50], 16,
    ...                            count_frequencies=[True, False])
    >>> stacked.build()
    >>> reports = replan_stacked(stacked, counts={0: np.arange(1000) ** 2})
    >>> model.compile(...)                                  # doctest: +SKIP
    """
    features = _features(layer, features)
    arrays = layer.numpy_weights()
    reports, replanned = {}, {}
    for f in features:
        report, ranks, tables, projections = replan_arrays(
            _snapshot(layer, f, arrays), _counts(layer, f, counts),
            layer.planning_args[f], layer.feature_names[f],
            sketch_threshold=sketch_threshold, sketch_rows=sketch_rows, seed=seed,
            skip_if_unchanged=skip_if_unchanged, sketch=sketch,
            max_error_ratio=max_error_ratio,
            held_bytes=COUNT_BYTES * int(layer.input_dims[f]) if layer.counting[f] else 0)
        reports[f] = report
        if report.rebuilt:
            replanned[f] = (report.new_plan, (tables, projections, ranks))
    if replanned:
        plans, per_feature = [], []
        for f in range(layer.num_features):
            if f in replanned:
                plans.append(replanned[f][0])
                per_feature.append(replanned[f][1])
                continue
            tables, projections = layer.feature_arrays(f, arrays["tables"],
                                                       arrays["projections"])
            plans.append(layer.plans[f])
            per_feature.append((tables, projections, layer.feature_ranks(f)))
        layer.rebuild(plans, per_feature)
    return reports
