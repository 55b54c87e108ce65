"""Raw Criteo rows the data tests share."""

import pytest


def criteo_row(label, dense, cats):
    """One raw TAB line: label, 13 integer features, 26 categorical values."""
    return "\t".join([str(label), *map(str, dense), *cats])


@pytest.fixture(name="criteo_row")
def criteo_row_fixture():
    """`criteo_row(label, dense, cats)` for tests that build their own rows."""
    return criteo_row


@pytest.fixture
def criteo_rows():
    """Four valid rows: missing and negative dense values, an empty value."""
    a, b, c = "68fd1e64", "80e26c9b", "fb936136"
    return [
        criteo_row(1, [1, "", -3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [a] * 26),
        criteo_row(0, [0] * 13, [b] * 25 + [""]),
        criteo_row(0, [""] * 13, [a] * 24 + [c, c]),
        criteo_row(1, [2] * 13, [a] * 26),
    ]


@pytest.fixture
def raw_file(tmp_path, criteo_rows):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(criteo_rows) + "\n")
    return path
