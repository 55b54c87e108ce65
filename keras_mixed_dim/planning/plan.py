"""`BlockPlan`: the immutable layout of one mixed-dimension embedding."""

import dataclasses

import numpy as np

from keras_mixed_dim.budgets import FLOAT_BYTES  # noqa: F401 (re-exported)
from keras_mixed_dim.budgets import REMAP_BYTES
from keras_mixed_dim.checks import check_positive_int

STORAGES = ("full", "qr")


@dataclasses.dataclass(frozen=True)
class Block:
    """One frequency block: ranks `[start, stop)` stored at `dim` columns.

    Attributes:
        start: First rank (0 = most frequent id) held by the block.
        stop: One past the last rank held by the block.
        dim: Width of the block's table.
        mass: Fraction of lookups that fall in the block when the plan was
            made, or None when the plan was not made from counts.
        storage: `"full"`: one `rows x dim` table. `"qr"`: a
            quotient-remainder pair (arXiv:1909.02107): row `r` of the block
            is `Q[r // m] * R[r % m]` (element-wise) with `Q` of
            `ceil(rows / m) x dim` and `R` of `m x dim`.
        num_collisions: `m` of a `"qr"` block (None for `"full"`).

    Args:
        start: First rank (0 = most frequent id) held by the block.
        stop: One past the last rank held by the block.
        dim: Width of the block's table.
        mass: Fraction of lookups that fall in the block when the plan was
            made, or None when the plan was not made from counts.
        storage: `"full"` or `"qr"` (see below).
        num_collisions: `m` of a `"qr"` block (None for `"full"`).

    Example:

    >>> Block(0, 100, 32, mass=0.5).rows
    100
    """

    start: int
    stop: int
    dim: int
    mass: float | None = None
    storage: str = "full"
    num_collisions: int | None = None

    def __post_init__(self):
        for name in ("start", "stop", "dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not float(value).is_integer():
                raise ValueError(
                    f"Block `{name}` must be an integer. Received: {value!r}"
                )
            object.__setattr__(self, name, int(value))
        if self.mass is not None:
            object.__setattr__(self, "mass", float(self.mass))
        if self.storage not in STORAGES:
            raise ValueError(
                f"Block `storage` must be one of {STORAGES}. Received: {self.storage!r}")
        if self.storage == "full":
            if self.num_collisions is not None:
                raise ValueError("`num_collisions` is only for storage='qr' blocks.")
        else:
            m = self.num_collisions
            if m is None or isinstance(m, bool) or not float(m).is_integer() or not (
                1 <= m <= max(1, self.stop - self.start)
            ):
                raise ValueError(
                    f"A 'qr' block of {self.stop - self.start} rows needs "
                    f"`num_collisions` in [1, {self.stop - self.start}]. Received: {m!r}")
            object.__setattr__(self, "num_collisions", int(m))

    @property
    def rows(self):
        return self.stop - self.start

    @property
    def quotient_rows(self):
        """Rows of the quotient table of a `"qr"` block."""
        return -(-self.rows // self.num_collisions)

    @property
    def table_params(self):
        """Floats stored for the block's rows (the projection excluded)."""
        if self.storage == "qr":
            return (self.quotient_rows + self.num_collisions) * self.dim
        return self.rows * self.dim


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """How the ids of one feature are split into blocks and sized.

    Block `i` has a table of `rows_i x dim_i` and, when `dim_i` differs from
    `output_dim`, a projection of `dim_i x output_dim`. Ranks are positions in
    the frequency ranking (0 = most frequent). When `remapped` is True the
    layer keeps an `input_dim` int32 table mapping each id to its rank;
    otherwise ids are taken as ranks.

    Attributes:
        input_dim: Number of ids.
        output_dim: The common (base) dimension every block projects to.
        blocks: Tuple of `Block`, contiguous, covering `[0, input_dim)`.
        remapped: Whether ids go through an id -> rank table.

    Args:
        input_dim: Number of ids.
        output_dim: The common (base) dimension every block projects to.
        blocks: Tuple of `Block`, contiguous, covering `[0, input_dim)`.
        remapped: Whether ids go through an id -> rank table.

    Example:

    >>> plan = BlockPlan(1000, 16, (Block(0, 100, 16), Block(100, 1000, 4)))
    >>> plan.dims, plan.params
    ((16, 4), 5264)
    >>> plan == BlockPlan.from_config(plan.get_config())
    True
    """

    input_dim: int
    output_dim: int
    blocks: tuple
    remapped: bool = False

    def __post_init__(self):
        blocks = tuple(
            b if isinstance(b, Block) else Block(**b) for b in self.blocks
        )
        object.__setattr__(self, "blocks", blocks)
        check_positive_int("input_dim", self.input_dim)
        check_positive_int("output_dim", self.output_dim)
        if not blocks:
            raise ValueError("A BlockPlan needs at least one block.")
        expected_start = 0
        for i, block in enumerate(blocks):
            if block.start != expected_start or block.stop <= block.start:
                raise ValueError(
                    f"Blocks must be contiguous and non-empty from rank 0: "
                    f"block {i} is [{block.start}, {block.stop}), expected "
                    f"it to start at {expected_start}."
                )
            if not 1 <= block.dim <= self.output_dim:
                raise ValueError(
                    f"Block {i} has dim {block.dim}; dims must be in "
                    f"[1, output_dim={self.output_dim}]."
                )
            expected_start = block.stop
        if expected_start != self.input_dim:
            raise ValueError(
                f"Blocks cover ranks [0, {expected_start}) but input_dim is "
                f"{self.input_dim}."
            )

    @property
    def num_blocks(self):
        return len(self.blocks)

    @property
    def rows(self):
        return tuple(b.rows for b in self.blocks)

    @property
    def dims(self):
        return tuple(b.dim for b in self.blocks)

    @property
    def offsets(self):
        """Start rank of each block, followed by `input_dim`."""
        return tuple(b.start for b in self.blocks) + (self.input_dim,)

    def has_projection(self, index):
        return self.blocks[index].dim != self.output_dim

    @property
    def embedding_params(self):
        return sum(b.table_params for b in self.blocks)

    @property
    def projection_params(self):
        return sum(
            b.dim * self.output_dim
            for i, b in enumerate(self.blocks)
            if self.has_projection(i)
        )

    @property
    def params(self):
        """Trainable parameters: tables plus projections."""
        return self.embedding_params + self.projection_params

    @property
    def remap_entries(self):
        return self.input_dim if self.remapped else 0

    @property
    def bytes(self):
        """Bytes of all weights: float32 tables, projections and the remap."""
        return self.params * FLOAT_BYTES + self.remap_entries * REMAP_BYTES

    @property
    def uniform_params(self):
        """Parameters of a plain `input_dim x output_dim` embedding."""
        return self.input_dim * self.output_dim

    @property
    def compression(self):
        """How many times fewer bytes than a plain float32 embedding."""
        return self.uniform_params * FLOAT_BYTES / self.bytes

    def block_of_rank(self, ranks):
        """Block index of each rank (numpy)."""
        ranks = np.asarray(ranks)
        return np.searchsorted(np.asarray(self.offsets[1:]), ranks, side="right")

    @property
    def has_qr_blocks(self):
        return any(b.storage == "qr" for b in self.blocks)

    def get_config(self):
        blocks = []
        for b in self.blocks:
            config = dataclasses.asdict(b)
            if b.storage == "full":
                # full blocks keep the config of plans made before QR storage
                del config["storage"], config["num_collisions"]
            blocks.append(config)
        return {
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "blocks": blocks,
            "remapped": self.remapped,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __str__(self):
        header = (
            f"BlockPlan: {self.input_dim:,} ids -> dim {self.output_dim}, "
            f"{self.num_blocks} blocks{', remapped' if self.remapped else ''}"
        )
        lines = [
            header,
            f"{'block':>5} {'ranks':>23} {'rows':>12} {'dim':>5} {'mass':>7} "
            f"{'params':>13}{'  storage' if self.has_qr_blocks else ''}",
        ]
        for i, b in enumerate(self.blocks):
            params = b.table_params + (
                b.dim * self.output_dim if self.has_projection(i) else 0
            )
            mass = "-" if b.mass is None else f"{b.mass:.3f}"
            storage = ""
            if self.has_qr_blocks:
                storage = "  full" if b.storage == "full" else (
                    f"  qr m={b.num_collisions:,} ({b.quotient_rows:,} + "
                    f"{b.num_collisions:,} rows)")
            lines.append(
                f"{i:>5} {f'[{b.start:,}, {b.stop:,})':>23} {b.rows:>12,} "
                f"{b.dim:>5} {mass:>7} {params:>13,}{storage}"
            )
        lines.append(
            f"total {self.params:,} params ({self.embedding_params:,} table + "
            f"{self.projection_params:,} projection) + {self.remap_entries:,} "
            f"remap entries = {self.bytes:,} bytes; "
            f"{self.compression:.1f}x smaller than a uniform "
            f"{self.input_dim:,} x {self.output_dim} table"
        )
        return "\n".join(lines)
