"""MovieLens readers, vocabularies, splits, MF/NCF models and the example."""

import json
import pathlib
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.datasets import Vocabulary
from keras_mixed_dim.datasets import read_ratings
from keras_mixed_dim.datasets import split_by_time
from keras_mixed_dim.datasets import split_random
from keras_mixed_dim.datasets import synthetic_ratings
from keras_mixed_dim.models import make_embedding
from keras_mixed_dim.models import matrix_factorization
from keras_mixed_dim.models import neural_cf

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "name, text",
    [
        ("u.data", "1\t10\t4\t881250949\n2\t10\t3\t891717742\n1\t20\t5\t878887116\n"),
        ("ratings.dat", "1::10::4::881250949\n2::10::3::891717742\n1::20::5::878887116\n"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,881250949\n"
                        "2,10,3.0,891717742\n1,20,5.0,878887116\n"),
    ],
)
def test_each_layout_from_folder_file_and_zip(tmp_path, name, text):
    folder = tmp_path / "ml"
    folder.mkdir()
    file = write(folder / name, text)
    archive = tmp_path / "ml.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(file, f"ml-x/{name}")
    for source in (folder, file, archive):
        ratings = read_ratings(source)
        np.testing.assert_array_equal(ratings.users, [1, 2, 1])
        np.testing.assert_array_equal(ratings.items, [10, 10, 20])
        np.testing.assert_array_equal(ratings.ratings, [4, 3, 5])
        np.testing.assert_array_equal(ratings.timestamps,
                                      [881250949, 891717742, 878887116])


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("u.data", "1\t10\t4\t881250949\n1\t10\t4\n", r"u\.data:2: expected 4 fields"),
        ("u.data", "1\t10\tfour\t881250949\n", r"u\.data:1: user, item"),
        ("ratings.dat", "1::10::4::5\n\n1::x::4::5\n", r"ratings\.dat:3:"),
        ("ratings.csv", "user,item,rating,ts\n", r"ratings\.csv:1: expected the header"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,nan,3\n", "not finite"),
        ("u.data", "", "holds no ratings"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, name, text, message):
    with pytest.raises(ValueError, match=message):
        read_ratings(write(tmp_path / name, text))


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No MovieLens data"):
        read_ratings(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="holds none of"):
        read_ratings(tmp_path)


def test_vocabulary_ranks_by_frequency_with_an_oov_index():
    vocab = Vocabulary.from_values([7, 3, 3, 9, 9, 9, 5])
    np.testing.assert_array_equal(vocab.tokens, [9, 3, 5, 7])
    np.testing.assert_array_equal(vocab.index_counts, [3, 2, 1, 1, 0])
    np.testing.assert_array_equal(vocab.lookup([9, 7, 42, 3]), [0, 3, 4, 1])
    assert vocab.size == 5 and vocab.oov_index == 4


def test_random_split_is_deterministic_and_disjoint():
    a = split_random(1000, 0.1, 0.1, seed=3)
    b = split_random(1000, 0.1, 0.1, seed=3)
    c = split_random(1000, 0.1, 0.1, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[2], c[2])
    assert [len(p) for p in a] == [810, 90, 100]
    assert len(np.unique(np.concatenate(a))) == 1000


def test_time_split_holds_out_each_users_latest():
    users = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2])
    times = np.array([5, 3, 9, 1, 7, 2, 8, 4, 6, 10, 1, 2])
    train, val, test = split_by_time(users, times, 0.2, 0.25)
    # user 1: 10 ratings -> 2 test (times 10, 9), 2 val (times 8, 7)
    assert sorted(times[test]) == [9, 10] and set(users[test]) == {1}
    assert sorted(times[val]) == [7, 8]
    assert set(times[train][users[train] == 1]) == {1, 2, 3, 4, 5, 6}
    with pytest.raises(ValueError, match="timestamps"):
        split_by_time(users, None)


def test_synthetic_ratings_follow_zipf_and_low_rank():
    ratings = synthetic_ratings(num_users=500, num_items=2000, num_ratings=50_000,
                                rank=8, noise=0.1, seed=1)
    counts = np.sort(np.bincount(ratings.items, minlength=2000))[::-1]
    assert counts[0] > 20 * np.median(counts[counts > 0])
    assert 0.8 < np.std(ratings.ratings) < 1.3
    again = synthetic_ratings(num_users=500, num_items=2000, num_ratings=50_000,
                              rank=8, noise=0.1, seed=1)
    np.testing.assert_array_equal(ratings.ratings, again.ratings)


@pytest.mark.parametrize("model_fn", ["mf", "ncf"])
@pytest.mark.parametrize("kind", ["uniform", "mixed"])
def test_models_learn_synthetic_ratings(model_fn, kind):
    ratings = synthetic_ratings(num_users=300, num_items=600, num_ratings=30_000,
                                rank=4, noise=0.1, seed=0)
    users = Vocabulary.from_values(ratings.users)
    items = Vocabulary.from_values(ratings.items)
    layers = [
        make_embedding(kind, vocab.size, 8, counts=vocab.index_counts, name=name)
        for name, vocab in (("user_embedding", users), ("item_embedding", items))
    ]
    mean = float(ratings.ratings.mean())
    if model_fn == "mf":
        model = matrix_factorization(users.size, items.size, *layers, global_mean=mean)
    else:
        model = neural_cf(*layers, global_mean=mean)
    assert isinstance(layers[0], MixedDimEmbedding) == (kind == "mixed")
    if kind == "mixed":
        assert not layers[0].plan.remapped  # vocab indices are already ranked
    features = {"user": users.lookup(ratings.users), "item": items.lookup(ratings.items)}
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(features, ratings.ratings, epochs=4, batch_size=512, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0]
    assert losses[-1] < float(np.var(ratings.ratings))


def test_example_trains_on_real_ml100k(shared_data, tmp_path):
    data = shared_data / "movielens" / "ml-100k"
    if not (data / "u.data").exists():
        pytest.skip(f"ml-100k not found at {data}")
    results_path = tmp_path / "results.json"
    model_path = tmp_path / "mf.keras"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "movielens.py"), "--data", str(data),
         "--embedding", "mixed", "--dim", "8", "--epochs", "3", "--verbose", "0",
         "--results-json", str(results_path), "--save", str(model_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
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
