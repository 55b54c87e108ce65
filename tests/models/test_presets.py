"""The mlperf-dcnv2 preset: MLPerf's numbers, scaling, and refusals."""

import pytest

from keras_mixed_dim.models.presets import get_preset
from keras_mixed_dim.models.presets import parse_fraction


def test_mlperf_preset_has_the_reference_model():
    config = get_preset("mlperf-dcnv2")
    assert config.total_rows == 204_184_588
    assert config.cardinalities[:3] == (40_000_000, 39_060, 17_295)
    assert sum(config.bag_sizes) == 214 and config.bag_sizes[20] == 100
    assert (config.dim, config.num_dense, config.bottom, config.top) == (
        128, 13, (512, 256), (1024, 1024, 512, 256))
    assert (config.interaction, config.cross_layers, config.cross_rank) == (
        "dcnv2", 3, 512)
    assert config.uniform_table_bytes / 2**30 == pytest.approx(97.36, abs=0.01)


def test_scale_divides_cardinalities_rounding_up():
    config = get_preset("mlperf-dcnv2", scale=1000)
    assert config.cardinalities[0] == 40_000 and config.cardinalities[5] == 1
    assert config.cardinalities[1] == 40  # 39.06 rounded up
    assert config.one_hot().bag_sizes == (1,) * 26


@pytest.mark.parametrize("name, scale, match", [
    ("mlperf", 1, "'mlperf'"), ("mlperf-dcnv2", 0.5, "scale=0.5"),
    ("mlperf-dcnv2", "10", "scale='10'")])
def test_bad_presets_and_scales_are_named(name, scale, match):
    with pytest.raises(ValueError, match=match):
        get_preset(name, scale)


def test_budget_fractions():
    assert parse_fraction("1/16") == 1 / 16 and parse_fraction(0.5) == 0.5
    # a bool is no fraction (`float(True)` is 1.0, which passed as the whole table)
    for bad in ("1/0", "2", "a/16", "0", True):
        with pytest.raises(ValueError, match=repr(bad)):
            parse_fraction(bad)
