"""BlockPlan and Block: the plan a MixedDimEmbedding builds its tables from."""

import math

import pytest

from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan
from keras_mixed_dim.planning import plan_blocks
from tests.helpers import qr_plan


def test_plan_marks_big_blocks_qr_and_counts_them():
    plan = qr_plan()
    assert plan.has_qr_blocks
    for b in plan.blocks:
        if b.rows > 100:
            assert b.storage == "qr" and b.num_collisions == math.ceil(math.sqrt(b.rows))
            assert b.table_params == (math.ceil(b.rows / b.num_collisions)
                                      + b.num_collisions) * b.dim
        else:
            assert b.storage == "full" and b.table_params == b.rows * b.dim
    projections = sum(b.dim * 8 for b in plan.blocks if b.dim != 8)
    assert plan.params == sum(b.table_params for b in plan.blocks) + projections
    assert plan.bytes == 4 * plan.params + 4 * 3000
    text = str(plan)
    assert "qr m=" in text and f"{plan.bytes:,} bytes" in text
    full = plan_blocks(3000, 8, num_blocks=4, alpha=0.3)
    assert full.params > plan.params and "storage" not in str(full)


def test_plan_config_round_trip_and_old_configs_load():
    plan = qr_plan(qr_collisions=7)
    assert BlockPlan.from_config(plan.get_config()) == plan
    assert {b.num_collisions for b in plan.blocks if b.storage == "qr"} == {7}
    old = {"input_dim": 10, "output_dim": 4, "remapped": False,
           "blocks": [{"start": 0, "stop": 4, "dim": 4, "mass": 0.5},
                      {"start": 4, "stop": 10, "dim": 2, "mass": 0.5}]}
    loaded = BlockPlan.from_config(old)
    assert [b.storage for b in loaded.blocks] == ["full", "full"]
    assert loaded.get_config() == old


def test_bad_qr_blocks_are_rejected():
    with pytest.raises(ValueError, match="num_collisions"):
        Block(0, 10, 4, storage="qr")
    with pytest.raises(ValueError, match="num_collisions"):
        Block(0, 10, 4, storage="qr", num_collisions=11)
    with pytest.raises(ValueError, match="storage"):
        Block(0, 10, 4, storage="hash")
    with pytest.raises(ValueError, match="only for storage='qr'"):
        Block(0, 10, 4, num_collisions=3)
    with pytest.raises(ValueError, match="qr_min_rows"):
        plan_blocks(100, 4, qr_min_rows=0)
