"""dense_memory_options: the examples' one call for approximate activations
and low-rank gradients, leaving embedding tables out of the low-rank step."""

import keras

from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.layers.approx_activation_dense import ApproxActivationDense
from keras_mixed_dim.optimizers import dense_memory_options
from keras_mixed_dim.optimizers.low_rank_gradients import LowRankGradients
from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan


def test_embeddings_excluded_by_layer_in_dense_memory_options():
    keras.utils.set_random_seed(0)
    ids = keras.Input((1,), dtype="int32")
    table = keras.layers.Flatten()(keras.layers.Embedding(5000, 64, name="users")(ids))
    model = keras.Model(ids, keras.layers.Dense(1, name="out")(table))
    same_model, optimizer = dense_memory_options(model, "sgd", low_rank=4, min_size=10)
    assert same_model is model
    optimizer.build(model.trainable_variables)
    assert [v.path for v in model.trainable_variables if optimizer.covers(v)] == []
    approx, optimizer = dense_memory_options(model, "adam", approx_bits=8)
    assert isinstance(optimizer, str) and approx is not model


def test_no_option_returns_the_originals_and_both_options_combine():
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))
    optimizer = keras.optimizers.Adam()
    assert dense_memory_options(model, optimizer) == (model, optimizer)
    approx, low = dense_memory_options(model, optimizer, approx_bits=4, low_rank=2,
                                       min_size=100)
    assert isinstance(approx.get_layer("hidden"), ApproxActivationDense)
    assert approx.get_layer("hidden").bits == 4
    assert isinstance(low, LowRankGradients)
    low.build(approx.trainable_variables)
    # the 16x32 kernel (512 entries) is big enough, the 32x1 one is not
    assert [v.path for v in approx.trainable_variables if low.covers(v)] == [
        approx.get_layer("hidden").kernel.path]


def test_projections_of_a_mixed_dim_layer_are_left_out_by_its_class():
    # a projection's name has no "embedding" in it: only the layer's class
    # keeps it out of the low-rank step
    ids = keras.Input((1,), dtype="int32")
    plan = BlockPlan(100, 16, [Block(0, 10, 16), Block(10, 100, 8)])
    table = MixedDimEmbedding(100, 16, plan=plan, name="items")
    model = keras.Model(ids, keras.layers.Dense(8)(keras.layers.Flatten()(table(ids))))
    projection = table.block_projections[1]
    assert "embedding" not in projection.path
    _, optimizer = dense_memory_options(model, "sgd", low_rank=2, min_size=10)
    optimizer.build(model.trainable_variables)
    assert not any(optimizer.covers(v) for v in table.trainable_variables)
    assert optimizer.covers(model.layers[-1].kernel)
