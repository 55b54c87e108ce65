"""examples/dlrm_scale.py: a resumed run equals an uninterrupted one, and
the whole run at cardinalities / 1000."""

import dataclasses
import json
import pathlib
import sys

import keras
import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def scale_example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import dlrm_scale

    yield dlrm_scale
    sys.modules.pop("dlrm_scale", None)


def test_resumed_training_equals_uninterrupted(scale_example, tmp_path):
    from keras_mixed_dim.datasets.criteo.streaming import StreamingCriteo
    from keras_mixed_dim.io_utils import atomic_save_model
    from keras_mixed_dim.io_utils import load_model_file
    from keras_mixed_dim.models.presets import get_preset

    # the preset's tables and bags at / 1000, with narrow MLPs to stay cheap
    config = dataclasses.replace(get_preset("mlperf-dcnv2", 1000), bottom=(8,),
                                 top=(8,), cross_layers=2, cross_rank=4)
    data = StreamingCriteo(config.cardinalities, 32, config.bag_sizes)
    budget = config.uniform_table_bytes / 16

    def fresh():
        keras.utils.set_random_seed(0)
        return scale_example.build_model(config, "table", budget, lr=0.05)

    straight = fresh()
    scale_example.train(straight, data, 0, 4, verbose=0)
    expected = [keras.ops.convert_to_numpy(v) for v in straight.weights]
    keras.backend.clear_session()
    first = fresh()
    scale_example.train(first, data, 0, 2, verbose=0)
    atomic_save_model(first, tmp_path / "checkpoint.keras")
    keras.backend.clear_session()
    resumed = load_model_file(tmp_path / "checkpoint.keras")
    scale_example.train(resumed, data, 2, 2, verbose=0)
    assert int(resumed.optimizer.iterations.numpy()) == 4
    assert [v.path for v in resumed.weights] == [v.path for v in straight.weights]
    for variable, want in zip(resumed.weights, expected):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), want,
                                   rtol=1e-6, atol=1e-7, err_msg=variable.path)
    # and training moved the tables (the comparison is not of initial values)
    initial = fresh()
    tables = {v.path: keras.ops.convert_to_numpy(v) for v in initial.weights
              if v.path.endswith("_embeddings")}
    assert any(not np.array_equal(tables[v.path], keras.ops.convert_to_numpy(v))
               for v in resumed.weights if v.path in tables)


@pytest.mark.slow
def test_end_to_end_at_one_thousandth(run_python, tmp_path):
    results = tmp_path / "r.json"
    run_python(EXAMPLES / "dlrm_scale.py", "--scale", "1000", "--steps", "2",
               "--batch-size", "64", "--verbose", "0", "--serving-requests", "3",
               "--check-batches", "2", "--results-json", str(results))
    out = json.loads(results.read_text())
    assert out["serving"]["max_abs_difference"] < 1e-5
    assert out["serving"]["batches_compared"] == 2
    assert not out["serving"]["tensorflow_imported"]
    assert set(out["phases"]) == {"plan", "build", "train", "checkpoint", "resume",
                                  "train_resumed", "save", "export", "serving_check"}
    parts = out["bytes"]
    assert parts["tables"] + parts["projections"] <= out["budget_bytes"]
    assert parts["table_slots"] > 0 and parts["dense"] > 0


def test_bad_settings_fail_before_building(scale_example, monkeypatch):
    def no_variables(*args, **kwargs):
        raise AssertionError("a variable was created")

    monkeypatch.setattr(keras.Variable, "__init__", no_variables)
    for argv, match in [(["--budget-fraction", "1/1000"],
                         "'1/1000'.*smallest 'table' plan"),
                        (["--preset", "mlperf-dcn"], "'mlperf-dcn'"),
                        (["--embedding", "qr"], "'qr'")]:
        with pytest.raises(SystemExit, match=match):
            scale_example.run(scale_example.parse_args(argv))
