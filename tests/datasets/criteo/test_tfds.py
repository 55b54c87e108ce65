"""The tensorflow-datasets builder with DLRM's day splits."""

import pytest


def test_tfds_builder_makes_dlrm_day_splits(tmp_path, criteo_rows):
    tfds = pytest.importorskip(
        "tensorflow_datasets", reason="the tfds builder needs the [datasets] extra"
    )
    from keras_mixed_dim.datasets.criteo.tfds import CriteoKaggle
    from keras_mixed_dim.datasets.criteo.tfds import day_boundaries

    assert day_boundaries(70) == (60, 65)
    manual = tmp_path / "manual"
    manual.mkdir()
    rows = [criteo_rows[i % 4] for i in range(70)]
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
