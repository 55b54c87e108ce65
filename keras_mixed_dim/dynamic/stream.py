"""Feeding `DynamicEmbedding` layers from the input pipeline of `model.fit`."""

import keras


def dynamic_batches(batches, layers, optimizer, timestamps=None):
    """Maps raw ids to the layers' packed ids and row writes, batch by batch.

    A generator to pass to `model.fit`: each batch's raw ids are counted,
    admitted, evicted and rebalanced on the host (`DynamicEmbedding.prepare`)
    as the input pipeline reads it, and the batch carries the row writes that
    the train step applies before its lookups. `fit` may read ahead: the
    writes are applied in stream order, and an id reads only a row written
    for it (tags), never another id's.

    Args:
        batches: Iterable of `(x, y)` or `(x, y, sample_weight)` in stream
            order; `x` a dict holding raw ids (int64 or strings, any shape)
            under the names in `layers`.
        layers: Dict name -> `DynamicEmbedding`; the model takes the packed
            ids under `name` and the writes under `name + "_writes"`
            (`layer.writes_input(name + "_writes")`), passed as
            `layer(ids, writes=writes)`.
        optimizer: The model's optimizer (the writes reset its slots).
        timestamps: Optional key of `x` holding the batch's times (popped
            from `x`), given to every layer's `prepare`.

    Yields:
        The batches with `x` rewritten.

    Example:

    >>> stream = dynamic_batches(batches, {"user": users}, model.optimizer)
    >>> model.fit(stream, epochs=1)                        # doctest: +SKIP
    """
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "torch"):
        raise NotImplementedError(
            f"`dynamic_batches` needs TensorFlow or PyTorch: the {backend} trainer "
            f"keeps its own copy of the tables during `fit`, so row writes made in "
            f"the step would be lost. Call `layer.update` between `train_on_batch` "
            f"calls instead.")
    if optimizer is None:
        raise ValueError("`dynamic_batches` needs the model's optimizer (its slots "
                         "follow the rows); received optimizer=None.")
    for layer in layers.values():
        layer.attach_optimizer(optimizer)
    for batch in batches:
        x, rest = dict(batch[0]), tuple(batch[1:])
        times = x.pop(timestamps) if timestamps is not None else None
        for name, layer in layers.items():
            if name not in x:
                raise KeyError(f"Batch has no ids under {name!r}; it has {sorted(x)}.")
            x[name], x[name + "_writes"] = layer.prepare(x[name], timestamps=times)
        yield (x, *rest)
