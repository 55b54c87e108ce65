"""Feeding `DynamicEmbedding` layers from the input pipeline of `model.fit`."""

import queue
import threading

import numpy as np

from keras_mixed_dim.backend import row_writes


def dynamic_batches(batches, layers, model, timestamps=None, prefetch=0):
    """Maps raw ids to the layers' packed ids and row writes, batch by batch.

    A generator to pass to `model.fit`: each batch's raw ids are counted,
    admitted, evicted and rebalanced on the host (`DynamicEmbedding.prepare`)
    as the input pipeline reads it, and the batch carries the row writes that
    the train step applies before its lookups (in place on TensorFlow and
    PyTorch; on JAX, whose trainer holds the variables during `fit`, by a
    train step installed on `model` that applies them to the state it
    passes on). `fit` may read ahead: the writes are applied in stream
    order, and an id reads only a row written for it (tags), never another
    id's.

    Args:
        batches: Iterable of `(x, y)` or `(x, y, sample_weight)` in stream
            order; `x` a dict holding raw ids (int64 or strings, any shape)
            under the names in `layers`.
        layers: Dict name -> `DynamicEmbedding`; the model takes the packed
            ids under `name` and the writes under `name + "_writes"`
            (`layer.writes_input(name + "_writes")`), passed as
            `layer(ids, writes=writes)`.
        model: The compiled model (the writes reset its optimizer's slots).
        timestamps: Optional key of `x` holding the batch's times (popped
            from `x`), given to every layer's `prepare`.
        prefetch: Batches mapped ahead by a background thread, so that the
            host map may overlap the train step (0, the default: map in the
            caller's thread). Measured on 2 CPU cores the thread lost on JAX
            (0.83x to 0.89x the examples/s) and PyTorch (0.92x to 0.98x), so
            it is off unless asked for (docs/results/streaming.md).
            On TensorFlow, `fit` already reads the generator (and so maps)
            ahead in its own thread, so no second thread is added.

    Returns:
        A generator of the batches with `x` rewritten.

    Example:

    >>> stream = dynamic_batches(batches, {"user": users}, model)
    >>> model.fit(stream, epochs=1)                        # doctest: +SKIP
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("`dynamic_batches` needs a compiled model (its optimizer's "
                         f"slots follow the rows); received {model!r}.")
    for layer in layers.values():
        layer.attach_optimizer(optimizer)
    row_writes().install_write_step(model, layers)
    # set up now, not at the generator's first `next`, which `fit` calls
    # after it has built its train function
    mapped = _mapped(batches, layers, timestamps)
    if prefetch and row_writes().MAP_AHEAD:
        return _ahead(mapped, int(prefetch))
    return mapped


_DONE = object()


def _ahead(generator, size):
    """`generator`'s items, produced in order by one background thread."""
    items = queue.Queue(maxsize=size)

    def produce():
        try:
            for item in generator:
                items.put((item, None))
        except BaseException as error:  # re-raised in the consumer
            items.put((None, error))
            return
        items.put((_DONE, None))

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item, error = items.get()
        if error is not None:
            raise error
        if item is _DONE:
            return
        yield item


def _mapped(batches, layers, timestamps):
    names, members = list(layers), list(layers.values())
    for batch in batches:
        x, rest = dict(batch[0]), tuple(batch[1:])
        times = x.pop(timestamps) if timestamps is not None else None
        for name in names:
            if name not in x:
                raise KeyError(f"Batch has no ids under {name!r}; it has {sorted(x)}.")
        # `prepare` of each layer in turn, but the fallback buckets of all
        # of them in one hash: the hash's some 40 numpy calls cost what the
        # rest of a small batch's map does
        mapped = [layer._map_batch(x[name], timestamps=times)
                  for name, layer in layers.items()]
        buckets = joint_buckets(members, [m.hashed for m in mapped])
        for name, batch_map, batch_buckets in zip(names, mapped, buckets):
            x[name], x[name + "_writes"] = batch_map.pack(batch_buckets)
        yield (x, *rest)


def joint_buckets(layers, keys):
    """`[layer.fallback_buckets(k) for layer, k in zip(layers, keys)]`, the
    layers that hash alike (same seed and fallback range: the usual case
    of one model's features) in one pass over their keys: the hash is a
    chain of some 40 elementwise numpy calls whatever the number of keys."""
    groups = {}
    for i, layer in enumerate(layers):
        groups.setdefault((layer._hash.seed, layer.plan.fallback_range), []).append(i)
    result = [None] * len(layers)
    for members in groups.values():
        if len(members) == 1:
            i = members[0]
            result[i] = layers[i].fallback_buckets(keys[i])
            continue
        joined = layers[members[0]].fallback_buckets(
            np.concatenate([keys[i] for i in members]))
        start = 0
        for i in members:
            result[i], start = joined[start:start + keys[i].size], start + keys[i].size
    return result
