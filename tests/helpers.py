"""Helpers the test files share (import them from `tests.helpers`)."""

import keras
import numpy as np
from keras import ops

from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.planning import plan_blocks


def counting_model(input_dim=40, dim=8, half_life=None, bag=2):
    layer = MixedDimEmbedding(input_dim, dim, count_frequencies=True,
                              frequency_half_life=half_life, num_blocks=3, alpha=0.5,
                              name="items")
    inputs = keras.Input((bag,), dtype="int32")
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(layer(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model, layer


def shuffled_zipf_ids(num_ids, rows, exponent=1.3):
    """`(rows, 1)` ids with Zipf popularity over a random permutation."""
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, num_ids + 1) ** exponent
    return rng.permutation(num_ids)[rng.choice(num_ids, size=(rows, 1), p=p / p.sum())]


def counts_of(layer):
    return ops.convert_to_numpy(layer.frequency_counts)


def _sparse_model(num_blocks, optimizer, input_dim=12, dim=4, seed=0, loss_scaled=False):
    keras.utils.set_random_seed(seed)
    from keras_mixed_dim.optimizers import SparseRowOptimizer

    layer = MixedDimEmbedding(input_dim, dim, count_frequencies=True,
                              num_blocks=num_blocks, alpha=0.0 if num_blocks == 1 else 0.5,
                              name="items")
    inputs = keras.Input((2,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(
        layer(inputs))))
    optimizer = SparseRowOptimizer(keras.optimizers.SGD(0.1), **optimizer)
    if loss_scaled:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer, "mse")
    return model, layer


def _ftrl_weights(optimizer, slots, row, lr=0.1):
    """The weights FTRL-Proximal derives from its slots (numpy)."""
    accumulator, linear = (ops.convert_to_numpy(s)[row].astype("float64") for s in
                           sorted(slots, key=lambda s: not s.name.endswith("accumulator")))
    l1 = optimizer.l1_regularization_strength
    quadratic = (np.sqrt(accumulator) / lr + 2 * optimizer.l2_regularization_strength
                 + optimizer.beta / lr)
    return (np.clip(linear, -l1, l1) - linear) / quadratic


def qr_plan(**kwargs):
    counts = np.floor(1e5 / np.arange(1, 3001) ** 1.1)
    rng = np.random.default_rng(0)
    return plan_blocks(3000, 8, counts=counts[rng.permutation(3000)], num_blocks=4,
                       alpha=0.3, qr_min_rows=100, **kwargs)
