"""Training throughput and peak memory, measured the same way on every backend."""

import resource
import sys
import time

import keras


class ThroughputMeter(keras.callbacks.Callback):
    """Training examples per second, excluding each epoch's first batch.

    The first batch carries tracing, compilation and slot allocation, so the
    clock starts when the second one begins. The meter only hooks batch
    *begin* and is marked `async_safe`: a batch-end hook would make Keras copy
    every step's logs to the host, which serializes the device with Python.
    JAX and `tf.function` dispatch asynchronously, so the clock stops at the
    epoch's end, after its logs have been read back, which waits for every
    step.

    Args:
        batch_size: examples per step (global, over all replicas).
    """

    async_safe = True

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self.timed_batches = 0
        self.seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = None
        self._first = None
        self._last = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._first is None and batch > 0:
            self._start = time.perf_counter()
            self._first = batch
        self._last = batch

    def on_epoch_end(self, epoch, logs=None):
        if self._start is None:
            return
        _wait_for(logs)
        self.seconds += time.perf_counter() - self._start
        steps_per_execution = getattr(self.model, "steps_per_execution", 1) or 1
        self.timed_batches += self._last + steps_per_execution - self._first

    @property
    def examples_per_second(self):
        if not self.seconds:
            return float("nan")
        return self.timed_batches * self.batch_size / self.seconds


def _wait_for(logs):
    for value in (logs or {}).values():
        float(keras.ops.convert_to_numpy(value))


def peak_memory():
    """Peak bytes of the first accelerator (None on CPU) and of host memory.

    Returns:
        Dict with `device_peak_bytes` (what the backend's allocator held at
        its peak, or None without an accelerator), `device` (its name) and
        `host_peak_bytes` (the process's maximum resident set size).
    """
    device, peak = _device_peak()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS
    host = rss if sys.platform == "darwin" else rss * 1024
    return {"device": device, "device_peak_bytes": peak, "host_peak_bytes": host}


def _device_peak():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.local_devices()[0]
        stats = device.memory_stats() if device.platform != "cpu" else None
        if stats:
            return device.device_kind, stats.get("peak_bytes_in_use")
        return device.device_kind, None
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            return "GPU:0", tf.config.experimental.get_memory_info("GPU:0")["peak"]
        return "CPU", None
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0), torch.cuda.max_memory_allocated(0)
        return "CPU", None
    return backend, None
