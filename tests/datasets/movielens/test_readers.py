"""MovieLens readers for every published layout."""

import zipfile
import numpy as np
import pytest
from keras_mixed_dim.datasets import read_ratings


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


@pytest.mark.parametrize("rating", ["99", "-3", "0", "5.5"])
def test_ratings_outside_the_movielens_scale_name_file_and_line(tmp_path, rating):
    path = write(tmp_path / "u.data",
                 f"1\t10\t4\t881250949\n2\t10\t{rating}\t891717742\n")
    with pytest.raises(ValueError, match=rf"u\.data:2: rating '{rating}' is outside"):
        read_ratings(path)


def test_rating_range_is_an_explicit_option(tmp_path):
    path = write(tmp_path / "u.data", "1\t10\t9\t1\n2\t10\t-3\t2\n")
    np.testing.assert_array_equal(read_ratings(path, rating_range=(-5, 10)).ratings,
                                  [9, -3])
    np.testing.assert_array_equal(read_ratings(path, rating_range=None).ratings, [9, -3])
    with pytest.raises(ValueError, match="u.data:1: rating '9' is outside"):
        read_ratings(path, rating_range=(0, 5))
    with pytest.raises(ValueError, match="rating_range"):
        read_ratings(path, rating_range=(5, 1))


@pytest.mark.parametrize("field", [0, 1, 3])
def test_ids_beyond_int64_name_file_and_line(tmp_path, field):
    values = ["1", "10", "4", "881250949"]
    values[field] = str(2**63)
    path = write(tmp_path / "u.data", "1\t10\t4\t1\n" + "\t".join(values) + "\n")
    with pytest.raises(ValueError, match=r"u\.data:2: \w+ 9223372036854775808 does not fit"):
        read_ratings(path)


def test_largest_int64_id_is_kept_exactly(tmp_path):
    path = write(tmp_path / "u.data", f"{2**63 - 1}\t{-(2**63)}\t4\t1\n")
    ratings = read_ratings(path)
    assert ratings.users[0] == 2**63 - 1 and ratings.items[0] == -(2**63)


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t10\t4\t1\n2\t1\xff0\t4\t1\n")
    with pytest.raises(ValueError, match=r"u\.data:2: not valid UTF-8"):
        read_ratings(path)
