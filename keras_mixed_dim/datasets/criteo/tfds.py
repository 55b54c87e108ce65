"""Criteo Kaggle (Display Advertising Challenge) as a tensorflow-datasets builder.

A manual-download dataset (TensorFlow-only module, needs the `[datasets]`
extra): the data is behind Criteo's terms of use, so users place `train.txt`
in tfds's manual folder themselves. Splits follow DLRM's Kaggle setup: the
rows are 7 days in time order; days 0-5 are train and day 6 is split in two
halves, validation then test.

    import keras_mixed_dim.datasets.criteo.tfds  # registers "criteo_kaggle"
    builder = tfds.builder("criteo_kaggle")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/data/criteo"))
    train = builder.as_dataset(split="train")
"""

import numpy as np
import tensorflow_datasets as tfds

from keras_mixed_dim.datasets.criteo.format import CATEGORICAL_NAMES
from keras_mixed_dim.datasets.criteo.format import DENSE_NAMES
from keras_mixed_dim.datasets.criteo.format import NUM_DENSE
from keras_mixed_dim.datasets.criteo.format import describe_problem
from keras_mixed_dim.datasets.criteo.format import line_pattern
from keras_mixed_dim.datasets.criteo.format import open_text

DAYS = 7


def day_boundaries(num_rows, days=DAYS):
    """(train_stop, val_stop): rows [0, train_stop) train, then validation
    up to val_stop, then test (DLRM: 6 days train, day 6 halved)."""
    per_day = num_rows // days
    train_stop = per_day * (days - 1)
    return train_stop, train_stop + (num_rows - train_stop) // 2


class CriteoKaggle(tfds.core.GeneratorBasedBuilder):
    """Criteo Kaggle display-advertising clicks (manual download)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Raw rows with DLRM's day-based splits."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Accept Criteo's terms and download the Kaggle Display Advertising "
        "Challenge data (dac.tar.gz), extract it and place `train.txt` in the "
        "manual folder (by default ~/tensorflow_datasets/downloads/manual/)."
    )

    def _info(self):
        features = {"label": tfds.features.ClassLabel(num_classes=2)}
        for name in DENSE_NAMES:
            # NaN marks a missing value; negatives are kept as in the raw data.
            features[name] = tfds.features.Scalar(dtype=np.float32)
        for name in CATEGORICAL_NAMES:
            features[name] = tfds.features.Text()
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            supervised_keys=None,
            homepage="https://www.kaggle.com/c/criteo-display-ad-challenge",
        )

    def _split_generators(self, dl_manager):
        path = dl_manager.manual_dir / "train.txt"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        with open_text(path) as file:
            num_rows = sum(1 for line in file if line.strip())
        train_stop, val_stop = day_boundaries(num_rows)
        return {
            "train": self._generate_examples(path, 0, train_stop),
            "validation": self._generate_examples(path, train_stop, val_stop),
            "test": self._generate_examples(path, val_stop, num_rows),
        }

    def _generate_examples(self, path, start, stop):
        pattern = line_pattern(has_label=True)
        row = -1
        with open_text(path) as file:
            for number, line in enumerate(file, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                row += 1
                if row < start:
                    continue
                if row >= stop:
                    break
                if not pattern.fullmatch(line):
                    raise ValueError(f"{path}:{number}: {describe_problem(line)}")
                fields = line.split("\t")
                example = {"label": int(fields[0])}
                for name, value in zip(DENSE_NAMES, fields[1 : 1 + NUM_DENSE]):
                    example[name] = np.float32(value) if value else np.float32("nan")
                for name, value in zip(CATEGORICAL_NAMES, fields[1 + NUM_DENSE :]):
                    example[name] = value
                yield row, example
