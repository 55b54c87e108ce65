"""FrequencyRecount, the callback that re-ranks or re-plans the counting
layers during training, on the current backend (.ci/run runs tests/frequency
again under JAX and PyTorch)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim import FrequencyRecount
from keras_mixed_dim import MixedDimEmbedding
from tests.helpers import counting_model
from tests.helpers import counts_of
from tests.helpers import shuffled_zipf_ids


def test_callback_follows_a_drift_and_logs_what_it_did():
    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=60, dim=8, half_life=20.0, bag=1)
    rng = np.random.default_rng(1)
    popularity = 1.0 / np.arange(1, 61) ** 1.2
    first = rng.choice(60, size=(2000, 1), p=popularity / popularity.sum())
    shifted = 59 - first  # the most popular ids change halfway
    ids = np.concatenate([first, shifted])
    targets = np.sin(ids).astype("float32")
    callback = FrequencyRecount()
    history = model.fit(ids, targets, epochs=2, batch_size=200, shuffle=False,
                        callbacks=[callback], verbose=0)
    counts = counts_of(layer)
    ranks = ops.convert_to_numpy(layer.remap)
    plan = layer.plan
    # every block holds ids counted at least as often as any later block's:
    # membership is the top-k ranking by decayed count
    blocks = plan.block_of_rank(ranks)
    for b in range(plan.num_blocks - 1):
        assert counts[blocks == b].min() >= counts[blocks > b].max()
    assert ranks[59] < plan.rows[0]  # the new most popular id is in block 0
    logs = history.history
    assert "items_ids_moved" in logs and len(logs["items_ids_moved"]) == 2
    assert logs["items_block0_mass_after"][-1] >= logs["items_block0_mass_before"][-1]
    assert len(callback.reports) == 2


def test_callback_every_n_steps_runs_mid_epoch():
    model, layer = counting_model()
    callback = FrequencyRecount(every_n_steps=3)
    ids = np.random.default_rng(0).integers(0, 40, size=(64, 2))
    model.fit(ids, np.zeros((64, 1)), epochs=1, batch_size=8, callbacks=[callback],
              verbose=0)
    assert len(callback.reports) == 8 // 3


def test_callback_errors_are_clear():
    with pytest.raises(ValueError, match="every_n_steps"):
        FrequencyRecount(every_n_steps=0)
    inputs = keras.Input((1,), dtype="int32")
    model = keras.Model(inputs, MixedDimEmbedding(10, 4)(inputs))
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="count_frequencies=True"):
        model.fit(np.zeros((4, 1), "int32"), np.zeros((4, 1, 4)), verbose=0,
                  callbacks=[FrequencyRecount()])
    with pytest.raises(ValueError, match="frequency_half_life"):
        MixedDimEmbedding(10, 4, frequency_half_life=10)


def test_callback_replans_and_training_goes_on(tmp_path):
    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=300, dim=8, bag=1)
    ids = shuffled_zipf_ids(300, 4000)
    callback = FrequencyRecount(replan=True)
    old_plan = layer.plan
    history = model.fit(ids, np.sin(ids), epochs=3, batch_size=200, verbose=0,
                        callbacks=[callback])
    assert layer.plan != old_plan
    assert "items_warm_start_error" in history.history
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    path = tmp_path / "replanned.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(ids[:20], verbose=0),
                               model.predict(ids[:20], verbose=0), atol=1e-6)


def test_after_a_replan_every_compiled_function_sees_the_new_weights():
    # predict, evaluate and fit's validation used to keep the old variables
    # on TensorFlow (only the train step was rebuilt)
    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=300, dim=8, bag=1)
    ids = shuffled_zipf_ids(300, 2000)
    target = np.sin(ids).astype("float32")
    val_ids, val_target = ids[:400], target[:400]
    model.predict(val_ids, verbose=0)  # compile predict before the re-plan
    model.evaluate(val_ids, val_target, verbose=0)
    seen = []

    def check_validation(epoch, logs):
        # runs before FrequencyRecount's epoch end, on the weights that
        # fit's validation just used
        direct = ops.convert_to_numpy(model(val_ids))
        seen.append((logs["val_loss"], float(np.mean((direct - val_target) ** 2))))

    model.fit(ids, target, epochs=3, batch_size=200, verbose=0,
              validation_data=(val_ids, val_target),
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=check_validation),
                         FrequencyRecount(replan=True)])
    assert layer.plan.params > 0 and len(seen) == 3
    for val_loss, true_mse in seen:
        assert val_loss == pytest.approx(true_mse, rel=1e-4)
    direct = ops.convert_to_numpy(model(val_ids))
    np.testing.assert_allclose(model.predict(val_ids, verbose=0), direct, atol=1e-5)
    true_mse = float(np.mean((direct - val_target) ** 2))
    assert model.evaluate(val_ids, val_target, verbose=0) == pytest.approx(true_mse,
                                                                          rel=1e-4)


def test_callback_without_a_counting_layer_fails_before_training():
    inputs = keras.Input((1,), dtype="int32")
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(
        MixedDimEmbedding(20, 4)(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "mse")
    seen = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, l: seen.append(e))
    with pytest.raises(ValueError, match="count_frequencies=True"):
        model.fit(np.zeros((8, 1), "int32"), np.zeros((8, 1)), verbose=0,
                  callbacks=[FrequencyRecount(), probe])
    assert seen == []


def test_replan_keeps_the_dense_optimizers_step_for_its_schedule():
    """After a re-plan the wrapped optimizer's step carries over, so its
    learning-rate schedule goes on (0.1 * 0.1 ** (8 / 8) after 8 steps)."""
    from keras_mixed_dim.optimizers import SparseRowOptimizer

    keras.utils.set_random_seed(0)
    model, layer = counting_model(input_dim=300, dim=8, bag=1)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 8, 0.1)
    model.compile(SparseRowOptimizer(keras.optimizers.Adam(schedule), "adam"), "mse")
    ids = shuffled_zipf_ids(300, 8 * 50)
    old_plan = layer.plan
    model.fit(ids, np.sin(ids), epochs=1, batch_size=50, verbose=0,
              callbacks=[FrequencyRecount(replan=True)])
    assert layer.plan != old_plan  # the optimizer was rebuilt
    dense = model.optimizer.dense_optimizer
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 8
    assert int(ops.convert_to_numpy(dense.iterations)) == 8
    assert float(ops.convert_to_numpy(dense.learning_rate)) == pytest.approx(0.01)
