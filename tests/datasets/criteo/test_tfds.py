"""The tensorflow-datasets builder with DLRM's day splits."""

import pytest


def row(label, dense, cats):
    return "\t".join([str(label), *map(str, dense), *cats])


def make_rows():
    a, b, c = "68fd1e64", "80e26c9b", "fb936136"
    cats_1 = [a] * 26
    cats_2 = [b] * 25 + [""]
    cats_3 = [a] * 24 + [c, c]
    return [
        row(1, [1, "", -3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], cats_1),
        row(0, [0] * 13, cats_2),
        row(0, [""] * 13, cats_3),
        row(1, [2] * 13, cats_1),
    ]


def test_tfds_builder_makes_dlrm_day_splits(tmp_path):
    tfds = pytest.importorskip(
        "tensorflow_datasets", reason="the tfds builder needs the [datasets] extra"
    )
    from keras_mixed_dim.datasets.criteo.tfds import CriteoKaggle
    from keras_mixed_dim.datasets.criteo.tfds import day_boundaries

    assert day_boundaries(70) == (60, 65)
    manual = tmp_path / "manual"
    manual.mkdir()
    rows = [make_rows()[i % 4] for i in range(70)]
    (manual / "train.txt").write_text("\n".join(rows) + "\n")
    builder = CriteoKaggle(data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert sizes == {"train": 60, "validation": 5, "test": 5}
    first = next(iter(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False))))
    assert first["C1"] in (b"68fd1e64", b"80e26c9b")
    assert first["label"] in (0, 1)
