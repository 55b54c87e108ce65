"""Named model configurations, kept apart from the model code (as TorchRec
keeps its configs): the MLPerf DLRM-DCNv2 model and its smaller twins.

```python
from keras_mixed_dim.models.presets import get_preset
config = get_preset("mlperf-dcnv2", scale=1000)   # cardinalities / 1000
```
"""

import dataclasses
import math

from keras_mixed_dim.budgets import check_budget_fraction

# MLPerf Training v2+ recommendation (DLRM-DCNv2, Criteo 1TB multi-hot):
# rows per table and ids per sample, in feature order (TorchRec's
# torchrec_dlrm reference, `--num_embeddings_per_feature` and
# `--multi_hot_sizes`).
MLPERF_CARDINALITIES = (
    40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956,
    405282, 10, 2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000,
    590152, 12973, 108, 36)
MLPERF_BAG_SIZES = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12,
                    100, 27, 10, 3, 1, 1)


@dataclasses.dataclass(frozen=True)
class DLRMConfig:
    """Everything `dlrm()` needs besides the embedding kind and budget.

    Attributes:
        name: The preset's name.
        cardinalities: Rows per sparse feature (after `scale`).
        bag_sizes: Ids per sample of each feature (1: one-hot).
        dim: Embedding dim (every table's output).
        num_dense: Dense features.
        bottom: Hidden widths of the bottom MLP (it ends at `dim`).
        top: Hidden widths of the top MLP (then 1, sigmoid).
        interaction: `"dot"` or `"dcnv2"`.
        cross_layers, cross_rank: The DCNv2 cross network.
        scale: The divisor the cardinalities were taken down by.
    """

    name: str
    cardinalities: tuple
    bag_sizes: tuple
    dim: int
    num_dense: int
    bottom: tuple
    top: tuple
    interaction: str = "dot"
    cross_layers: int = 3
    cross_rank: int = 512
    scale: float = 1

    @property
    def num_features(self):
        return len(self.cardinalities)

    @property
    def total_rows(self):
        return int(sum(self.cardinalities))

    @property
    def uniform_table_bytes(self):
        """Bytes of every table at `dim` float32 columns."""
        return 4 * self.total_rows * self.dim

    def model_kwargs(self):
        """Keyword arguments of `dlrm()` (besides the embeddings)."""
        return dict(dim=self.dim, bottom=self.bottom, top=self.top,
                    num_dense=self.num_dense, bag_sizes=self.bag_sizes, interaction=self.interaction,
                    cross_layers=self.cross_layers, cross_rank=self.cross_rank)

    def one_hot(self):
        """The same model with one id per feature."""
        return dataclasses.replace(self, bag_sizes=(1,) * self.num_features)


_PRESETS = {
    "mlperf-dcnv2": dict(
        cardinalities=MLPERF_CARDINALITIES, bag_sizes=MLPERF_BAG_SIZES, dim=128,
        num_dense=13, bottom=(512, 256), top=(1024, 1024, 512, 256),
        interaction="dcnv2", cross_layers=3, cross_rank=512),
}
PRESETS = tuple(_PRESETS)


def get_preset(name, scale=1):
    """A named `DLRMConfig`, its cardinalities divided by `scale`.

    Args:
        name: One of `PRESETS` (`"mlperf-dcnv2"`).
        scale: Divisor of every cardinality (each rounded up, at least 1):
            1 is the full model, 1000 a small twin for tests.

    Returns:
        A `DLRMConfig`. Nothing is allocated: a bad name or scale fails here.
    """
    if name not in _PRESETS:
        raise ValueError(f"Unknown preset {name!r}; known presets: {PRESETS}.")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
            math.isfinite(scale) and scale >= 1):
        raise ValueError(f"`scale` must be a number >= 1 (a divisor of the "
                         f"cardinalities). Received: scale={scale!r}")
    spec = dict(_PRESETS[name])
    spec["cardinalities"] = tuple(max(1, math.ceil(c / scale))
                                  for c in spec["cardinalities"])
    return DLRMConfig(name=name, scale=scale, **spec)


def parse_fraction(text, name="budget_fraction"):
    """`"1/16"`, `"0.0625"` or a float -> a fraction in (0, 1]; errors name
    it as `name` (the argument or flag that carried it)."""
    return check_budget_fraction(text, name)
