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


def test_history_bags_hold_only_earlier_ratings_and_ncf_trains_on_them(tmp_path):
    import sys

    import numpy as np

    sys.path.insert(0, str(EXAMPLES))
    import movielens

    users = np.array([7, 7, 3, 7, 3, 7])
    items = np.array([10, 11, 12, 13, 14, 15])
    times = np.array([5, 1, 2, 1, 9, 8])
    history = movielens.last_rated_items(users, items, times, 2)
    # user 7 by time: 11 (t1), 13 (t1, later in the data), 10 (t5), 15 (t8)
    np.testing.assert_array_equal(
        history, [[3, 1], [-1, -1], [-1, -1], [1, -1], [2, -1], [0, 3]])
    args = movielens.parse_args([
        "--model", "ncf", "--history", "3", "--synthetic-users", "60",
        "--synthetic-items", "80", "--synthetic-ratings", "3000", "--epochs", "2",
        "--dim", "4", "--verbose", "0", "--embedding", "qr", "--params-per-id", "2"])
    results = movielens.run(args)
    assert results["history"] == 3 and np.isfinite(results["mse"]["test"])
    with pytest.raises(SystemExit):
        movielens.parse_args(["--history", "3"])  # MF has no history input
