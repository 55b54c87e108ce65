"""`model.fit` under `tf.distribute.MultiWorkerMirroredStrategy` (TensorFlow only).

Keras 3 (checked with 3.15.1 and TF 2.21) cannot `fit` under a multi-worker
strategy (keras-team/keras#20585): before the first step it reduces the first
per-replica *input batch* across workers to build the model symbolically, and
TF rejects that reduce; then it reduces every step's scalar logs with
`axis=0`, which a scalar does not have. `enable_multiworker_fit` replaces
exactly those two steps, and only when the strategy runs in multi-worker mode,
which is the one case where Keras raises today: every other path goes through
Keras's own code unchanged. Training itself (variables, gradient all-reduce,
optimizer) is Keras's and TF's.
"""

import functools
import warnings

import keras
import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tf_trainer

_PATCHED = "_keras_mixed_dim_multiworker"
# The Keras releases this shim was written and tested against.
TESTED_KERAS = ((3, 15),)


def _keras_minor():
    return tuple(int(part) for part in keras.__version__.split(".")[:2])


def in_multiworker_mode(strategy):
    """True when `strategy` is a MultiWorkerMirroredStrategy over several workers."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def enable_multiworker_fit():
    """Lets `model.fit` / `evaluate` run under a multi-worker strategy.

    Idempotent; call it once per process before `fit`. Without a multi-worker
    strategy nothing changes.
    """
    if getattr(tf_trainer, _PATCHED, False):
        return
    cls = tf_trainer.TensorFlowTrainer
    if not hasattr(cls, "_maybe_symbolic_build") or not hasattr(
            tf_trainer, "reduce_per_replica"):
        raise RuntimeError(
            f"Keras {keras.__version__} no longer has the internals this shim "
            "patches (keras-team/keras#20585); check whether that Keras fits "
            "under MultiWorkerMirroredStrategy on its own.")
    if _keras_minor() not in TESTED_KERAS:
        warnings.warn(
            f"enable_multiworker_fit patches Keras internals tested with Keras "
            f"{', '.join('.'.join(map(str, v)) for v in TESTED_KERAS)}; this is "
            f"Keras {keras.__version__}. Drop the shim once keras-team/keras#20585 "
            "is fixed in your version.", stacklevel=2)
    tf_trainer.reduce_per_replica = _reduce_scalars_over_workers(
        tf_trainer.reduce_per_replica)
    cls._maybe_symbolic_build = _build_from_local_batch(cls._maybe_symbolic_build)
    setattr(tf_trainer, _PATCHED, True)


def _reduce_scalars_over_workers(reduce_per_replica):
    @functools.wraps(reduce_per_replica)
    def reduce(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not in_multiworker_mode(strategy):
            return reduce_per_replica(values, strategy, reduction)

        def mean(value):
            if _rank(value, strategy) == 0:
                # the mean of every replica's metric value, over all workers
                return strategy.reduce("MEAN", value, axis=None)
            return reduce_per_replica(value, strategy, reduction)

        return tree.map_structure(mean, values)

    return reduce


def _rank(value, strategy):
    if isinstance(value, tf.distribute.DistributedValues):
        value = strategy.experimental_local_results(value)[0]
    return value.shape.rank


def _build_from_local_batch(maybe_symbolic_build):
    @functools.wraps(maybe_symbolic_build)
    def build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or data_batch is not None or not in_multiworker_mode(strategy):
            return maybe_symbolic_build(self, iterator=iterator, data_batch=data_batch)
        # shapes and dtypes are all the build needs: this worker's first
        # replica's batch has them, no collective op required
        for _, _, distributed in iterator:
            batch = next(distributed)
            data_batch = tree.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v,
                batch,
            )
            break
        return maybe_symbolic_build(self, data_batch=data_batch)

    return build
