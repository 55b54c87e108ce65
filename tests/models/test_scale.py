"""Settings checked before allocation, bytes of every part, host sizing."""

import keras
import numpy as np
import pytest

from keras_mixed_dim.models.presets import get_preset
from keras_mixed_dim.models.scale import check_settings
from keras_mixed_dim.models.scale import dense_parameters
from keras_mixed_dim.models.scale import hosts_needed
from keras_mixed_dim.models.scale import part_bytes
from keras_mixed_dim.models.scale import preset_embeddings
from keras_mixed_dim.models.scale import preset_model
from keras_mixed_dim.models.scale import smallest_bytes


def test_full_size_settings_fail_before_allocating(monkeypatch):
    # nothing may be built: any variable created would fail this test
    def no_variables(*args, **kwargs):
        raise AssertionError("a variable was created")

    monkeypatch.setattr(keras.Variable, "__init__", no_variables)
    config = get_preset("mlperf-dcnv2")
    smallest = smallest_bytes(config, "table")
    # every table one column (plus a 1 x 128 projection each)
    assert smallest == 4 * (config.total_rows + 26 * 128)
    with pytest.raises(ValueError, match="'1/256'.*'table'"):
        check_settings(config, "table", "1/256")
    with pytest.raises(ValueError, match="'tables'"):
        check_settings(config, "tables", "1/16")
    with pytest.raises(ValueError, match="'1/2'"):
        check_settings(config, "uniform", "1/2")
    assert check_settings(config, "table", "1/16") == config.uniform_table_bytes / 16
    assert check_settings(config, "md_qr", "1/1024") > 0


def test_part_bytes_count_every_variable_once():
    config = get_preset("mlperf-dcnv2", scale=1000).one_hot()
    budget = config.uniform_table_bytes / 16
    model = preset_model(config, preset_embeddings(config, "table", budget))
    model.compile(optimizer="adagrad", loss="binary_crossentropy")
    model.optimizer.build(model.trainable_variables)
    parts = part_bytes(model, model.optimizer)
    weights = sum(int(np.prod(v.shape)) * 4 for v in model.weights)
    assert parts["tables"] + parts["projections"] + parts["remaps"] + parts["dense"] \
        == weights
    assert parts["dense"] == 4 * dense_parameters(config)
    assert parts["tables"] + parts["projections"] <= budget * 1.02
    # Keras's Adagrad: one accumulator per trainable float
    assert parts["table_slots"] + parts["dense_slots"] == 4 * model.count_params()


def test_hosts_needed_shrink_with_the_budget():
    config = get_preset("mlperf-dcnv2")
    uniform = hosts_needed(config, "uniform", 1, 24)
    assert uniform >= 5  # 97 GiB of tables on 24 GiB hosts
    assert hosts_needed(config, "table", "1/16", 24) == 1
    assert hosts_needed(config, "table", "1/4", 24) > 1
    assert hosts_needed(config, "uniform", 1, 256) == 1


def test_md_qr_budget_between_bound_and_smallest_plan_is_refused_unbuilt():
    config = get_preset("mlperf-dcnv2", scale=1000).one_hot()
    bound = smallest_bytes(config, "md_qr")
    fraction = bound / config.uniform_table_bytes
    budget = check_settings(config, "md_qr", fraction)
    with pytest.raises(ValueError, match=f"{budget:,.0f} bytes"):
        preset_embeddings(config, "md_qr", budget)
    # "table" plans fit their budget, projections included
    budget = config.uniform_table_bytes / 64
    layers = preset_embeddings(config, "table", budget)
    assert not any(layer.built for layer in layers)
    planned = sum(layer.plan.bytes for layer in layers)
    # dims are whole numbers: at 1/1000 one step of a 40k-row table is 10%
    assert budget / 2 < planned <= budget


def test_host_uniform_draws_keras_uniform_range_reproducibly():
    from keras_mixed_dim.models.scale import HostUniform

    values = HostUniform(seed=3)((1000, 7))
    assert values.dtype == np.float32 and values.shape == (1000, 7)
    assert -0.05 <= values.min() < -0.049 and 0.049 < values.max() < 0.05
    assert abs(values.mean()) < 0.002 and values.std() == pytest.approx(0.1 / 12**0.5,
                                                                         rel=0.02)
    again = HostUniform.from_config(HostUniform(seed=3).get_config())((1000, 7))
    np.testing.assert_array_equal(values, again)
