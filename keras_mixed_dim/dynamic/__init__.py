"""Vocabularies that grow while training (`DynamicEmbedding`'s host side).

`DynamicIdMap` (raw int64 key -> slot, admission, eviction, tiers),
`CountMinSketch`, `plan_capacity` (how a byte budget is spent) and
`raw_keys` are numpy code; `keras_mixed_dim.dynamic.serving` (TensorFlow
only) builds the serving-time preprocessing.
"""

from keras_mixed_dim.dynamic.id_map import EVICTIONS
from keras_mixed_dim.dynamic.id_map import Changes
from keras_mixed_dim.dynamic.id_map import DynamicIdMap
from keras_mixed_dim.dynamic.id_map import raw_keys
from keras_mixed_dim.dynamic.plan import DynamicPlan
from keras_mixed_dim.dynamic.plan import plan_capacity
from keras_mixed_dim.dynamic.sketch import CountMinSketch
from keras_mixed_dim.dynamic.stream import dynamic_batches

__all__ = ["EVICTIONS", "Changes", "CountMinSketch", "DynamicIdMap", "DynamicPlan",
           "dynamic_batches", "plan_capacity", "raw_keys"]
