"""The DLRM settings and the timed `fit` of the benchmarks that time this
package's DLRM step (bench_embedding_rows.py, bench_vs_reference.py,
bench_step_breakdown.py), so that their figures stay comparable."""

BATCH, LR, DIM = 2048, 0.1, 16
BOTTOM, TOP = (512, 256, 64), (512, 256)


def fit_timed(model, x, y, meter, steps, batch=BATCH):
    """Fits `steps` timed batches of `x` (a dict of arrays) and `y` with
    `meter` (`examples/common/metering.ThroughputMeter`), plus one: the
    meter leaves out each fit's first (the data adapter's start).

    Returns:
        `(timed batches, seconds)` of this fit.
    """
    seconds, batches = meter.seconds, meter.timed_batches
    rows = batch * (steps + 1)
    model.fit({k: v[:rows] for k, v in x.items()}, y[:rows], batch_size=batch,
              epochs=1, verbose=0, shuffle=False, callbacks=[meter])
    return meter.timed_batches - batches, meter.seconds - seconds
