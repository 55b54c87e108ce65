"""One process of a multi-process JAX job (keras.distribution over
`jax.distributed` on CPU): the mlperf-dcnv2 preset with uniform tables,
their rows sharded over the processes by a layout map, trained with sparse
row updates.

    jax_multiprocess_dlrm.py PROCESS_ID NUM_PROCESSES PORT STEPS SCALE BATCH NARROW

Prints one JSON line: per-step losses, the rows of each sharded table this
process holds, its table bytes, its peak RSS and examples/s (steps after
the first). NARROW=1 shrinks the MLPs and cross layers (the test); 0 keeps
the preset's (the benchmark).
"""

import dataclasses
import json
import os
import resource
import sys
import time

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

process_id, processes, port, steps, scale, batch, narrow = sys.argv[1:8]
process_id, processes, steps, batch = map(int, (process_id, processes, steps, batch))

import jax  # noqa: E402

# CPU collectives across processes (the XLA default is none on CPU)
jax.config.update("jax_cpu_collectives_implementation", "gloo")

import keras  # noqa: E402
import numpy as np  # noqa: E402

if processes > 1:
    keras.distribution.initialize(f"localhost:{port}", processes, process_id)

from keras_mixed_dim.datasets.criteo.streaming import StreamingCriteo  # noqa: E402
from keras_mixed_dim.distribute import jax_distribution  # noqa: E402
from keras_mixed_dim.distribute import sharded_table_paths  # noqa: E402
from keras_mixed_dim.models.presets import get_preset  # noqa: E402
from keras_mixed_dim.models.scale import preset_embeddings  # noqa: E402
from keras_mixed_dim.models.scale import preset_model  # noqa: E402
from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer  # noqa: E402

config = get_preset("mlperf-dcnv2", float(scale))
if narrow == "1":
    config = dataclasses.replace(config, bottom=(16,), top=(16,), cross_layers=1,
                                 cross_rank=8)
keras.utils.set_random_seed(0)
embeddings = preset_embeddings(config, "uniform", config.uniform_table_bytes)
jax_distribution("model", embeddings)
model = preset_model(config, embeddings, stacked=False)
model.compile(optimizer=SparseRowOptimizer(keras.optimizers.Adagrad(0.05),
                                           table_optimizer="adagrad"),
              loss="binary_crossentropy")
data = StreamingCriteo(config.cardinalities, batch, config.bag_sizes)
losses, times = [], []
for step in range(steps):
    inputs, labels = data.batch(step)  # every process reads the whole batch
    times.append(time.perf_counter())
    losses.append(float(model.train_on_batch(inputs, labels)))
times.append(time.perf_counter())
paths = set(sharded_table_paths(embeddings, processes))
shards, table_bytes, all_table_bytes = {}, 0, 0
for variable in model.weights:
    if variable.path.endswith("_embeddings"):
        local = [s.data for s in variable.value.addressable_shards]
        table_bytes += sum(int(x.nbytes) for x in local)
        all_table_bytes += int(np.prod(variable.shape)) * 4
        if variable.path in paths:
            shards[variable.path] = [int(x.shape[0]) for x in local]
timed = steps - 1
print(json.dumps({
    "process": process_id, "processes": processes, "losses": losses,
    "shards": shards, "table_bytes": table_bytes, "all_table_bytes": all_table_bytes,
    "devices": len(jax.devices()),
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "examples_per_second": timed * batch / (times[-1] - times[1]) if timed else None,
}), flush=True)
