"""examples/criteo.py end to end."""

import json
import pathlib
import sys
import keras
import pytest
from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.layers.stacked_embedding import StackedEmbedding


EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_example_end_to_end_on_real_rows(shared_data, tmp_path, run_python):
    data = shared_data / "criteo" / "derived" / "train.tiny.txt"
    if not data.exists():
        pytest.skip(f"Criteo sample not found at {data}")
    results_path, model_path = tmp_path / "r.json", tmp_path / "m.keras"
    result = run_python(
        EXAMPLES / "criteo.py", "--data", str(data),
        "--vocab-dir", str(tmp_path / "vocab"), "--embedding", "table_blocks",
        "--epochs", "2", "--batch-size", "256", "--bottom", "64", "--top", "64",
        "--verbose", "0", "--results-json", str(results_path),
        "--save", str(model_path))
    results = json.loads(results_path.read_text())
    assert results["source"]["rows"] == 1999
    losses = results["loss_history"]
    assert losses[-1] < losses[0]
    assert results["vocabulary_bytes"] > 0 and results["embedding_bytes"] > 0
    assert "val AUC" in result.stdout
    assert results["stacked"] is True  # "table_blocks" tables stack by default
    loaded = keras.models.load_model(model_path)
    stacked = loaded.get_layer("embeddings")
    assert isinstance(stacked, StackedEmbedding)
    assert stacked.feature_names[2] == "embedding_2"
    assert results["embedding_bytes"] == stacked.bytes


def test_example_per_feature_layout(tmp_path, run_python):
    results_path, model_path = tmp_path / "r.json", tmp_path / "m.keras"
    run_python(EXAMPLES / "criteo.py", "--synthetic-rows", "2000",
               "--cardinality-scale", "0.0001", "--embedding", "table_blocks", "--epochs", "1",
               "--batch-size", "256", "--bottom", "16", "--top", "16", "--dim", "4",
               "--per-feature", "--verbose", "0", "--results-json", str(results_path),
               "--save", str(model_path))
    results = json.loads(results_path.read_text())
    assert results["stacked"] is False
    loaded = keras.models.load_model(model_path)
    assert isinstance(loaded.get_layer("embedding_2"), MixedDimEmbedding)


def test_empty_data_is_a_clear_error_before_training(tmp_path, run_python):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run_python(EXAMPLES / "criteo.py", "--data", empty, "--verbose", "0",
                        check=False)
    assert result.returncode != 0
    assert "No valid Criteo rows in" in result.stderr and "empty.txt" in result.stderr
    assert "Traceback" not in result.stderr and "KeyError" not in result.stderr
    assert not (tmp_path / "empty.txt.vocab").exists()


def test_criteo_example_trains_the_preset(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import criteo

    try:
        results = criteo.run(criteo.parse_args([
            "--preset", "mlperf-dcnv2", "--preset-scale", "1000",
            "--budget-fraction", "1/16", "--steps", "2", "--batch-size", "32",
            "--optimizer", "adagrad", "--verbose", "0"]))
    finally:
        sys.modules.pop("criteo", None)
    assert results["dim"] == 128 and len(results["cardinalities"]) == 26
    assert results["cardinalities"][0] == 40_000
    # a fraction budget is that share of the uniform tables' bytes, every
    # array of the embeddings counted
    assert results["budget_fraction"] == 0.0625
    uniform = 4 * sum(results["cardinalities"]) * 128
    assert 0.9 * uniform / 16 < results["embedding_bytes"] <= uniform / 16
