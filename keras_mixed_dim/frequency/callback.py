"""`FrequencyRecount`: re-rank ids into blocks from the counts seen in training."""

import keras

from keras_mixed_dim.frequency.rerank import rerank_layer
from keras_mixed_dim.layers import MixedDimEmbedding


class FrequencyRecount(keras.callbacks.Callback):
    """Re-ranks the ids of counting `MixedDimEmbedding` layers during training.

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

    Args:
        every_n_steps: Re-rank every this many training steps; None (the
            default) re-ranks at the end of each epoch.
        layer_names: Names of the layers to re-rank; default every
            `MixedDimEmbedding` in the model that counts frequencies.
    """

    def __init__(self, every_n_steps=None, layer_names=None):
        super().__init__()
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

    def _layers(self):
        found = [
            layer for layer in _walk(self.model)
            if isinstance(layer, MixedDimEmbedding) and layer.count_frequencies
        ]
        if self.layer_names is None:
            if not found:
                raise ValueError(
                    "FrequencyRecount found no MixedDimEmbedding with "
                    "count_frequencies=True in the model."
                )
            return found
        by_name = {layer.name: layer for layer in found}
        missing = [n for n in self.layer_names if n not in by_name]
        if missing:
            raise ValueError(
                f"FrequencyRecount: no counting MixedDimEmbedding named {missing}; "
                f"counting layers are {sorted(by_name)}."
            )
        return [by_name[n] for n in self.layer_names]

    def recount(self):
        """Re-ranks now; returns `{layer name: RerankReport}`."""
        # On JAX the variables live in the trainer's state between epochs;
        # bring them back to the layers before reading or writing them.
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        optimizer = getattr(self.model, "optimizer", None)
        reports = {}
        for layer in self._layers():
            report = rerank_layer(layer, optimizer=optimizer)
            reports[layer.name] = report
            self._last.update(_as_logs(layer.name, report))
        self.reports.append(reports)
        return reports

    def on_train_batch_end(self, batch, logs=None):
        if self.every_n_steps is None:
            return
        self._steps += 1
        if self._steps % self.every_n_steps == 0:
            self.recount()

    def on_epoch_end(self, epoch, logs=None):
        if self.every_n_steps is None:
            self.recount()
        if logs is not None:
            logs.update(self._last)


def _as_logs(name, report):
    logs = {
        f"{name}_ids_moved": float(report.ids_moved),
        f"{name}_warm_start_error": report.warm_start_error,
    }
    for i, (before, after) in enumerate(zip(report.mass_before, report.mass_after)):
        logs[f"{name}_block{i}_mass_before"] = before
        logs[f"{name}_block{i}_mass_after"] = after
    return logs


def _walk(layer):
    yield layer
    for child in getattr(layer, "_layers", []):
        yield from _walk(child)
