"""examples/movielens.py end to end."""

import json
import pathlib
import keras
import pytest
from keras_mixed_dim import MixedDimEmbedding


EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_example_trains_on_real_ml100k(shared_data, tmp_path, run_python):
    data = shared_data / "movielens" / "ml-100k"
    if not (data / "u.data").exists():
        pytest.skip(f"ml-100k not found at {data}")
    results_path = tmp_path / "results.json"
    model_path = tmp_path / "mf.keras"
    result = run_python(
        EXAMPLES / "movielens.py", "--data", str(data),
        "--embedding", "mixed", "--dim", "8", "--epochs", "3", "--verbose", "0",
        "--results-json", str(results_path), "--save", str(model_path))
    results = json.loads(results_path.read_text())
    assert results["ratings"]["test"] == 10_000
    assert results["num_users"] == 944  # 943 users + the OOV index
    # well below the variance of the ratings (about 1.27): it learned
    assert results["mse"]["test"] < 1.0
    losses = results["loss_history"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert "test MSE" in result.stdout
    loaded = keras.models.load_model(model_path)
    assert isinstance(loaded.get_layer("item_embedding"), MixedDimEmbedding)
