"""Frequency blocks inside one feature, and the BlockPlan value."""

import dataclasses

import numpy as np
import pytest

from keras_mixed_dim.planning import Block
from keras_mixed_dim.planning import BlockPlan
from keras_mixed_dim.planning import block_dims
from keras_mixed_dim.planning import equal_mass_boundaries
from keras_mixed_dim.planning import plan_blocks
from keras_mixed_dim.planning import rank_ids
from keras_mixed_dim.planning import ranks_of_ids
from keras_mixed_dim.planning import zipf_counts


def test_ranking_breaks_ties_by_id():
    order = rank_ids([1, 3, 3, 0, 5])
    np.testing.assert_array_equal(order, [4, 1, 2, 0, 3])
    np.testing.assert_array_equal(ranks_of_ids(order), [3, 1, 2, 4, 0])


def test_equal_mass_boundaries_by_hand():
    # masses 8,4,2,1,1 of 16: half is reached by the first id alone.
    assert equal_mass_boundaries([8, 4, 2, 1, 1], 2) == (0, 1, 5)
    # quarters at 4, 8, 12: first id reaches 8, then 12 needs ids 0..1.
    assert equal_mass_boundaries([8, 4, 2, 1, 1], 4) == (0, 1, 2, 3, 5)
    assert equal_mass_boundaries([1, 1, 1, 1], 2) == (0, 2, 4)


def test_blocks_hold_equal_mass_on_a_long_tail():
    counts = 1.0 / np.arange(1, 100_001) ** 1.05
    offsets = equal_mass_boundaries(counts, 4)
    masses = np.add.reduceat(counts, offsets[:-1]) / counts.sum()
    # each block's mass is a quarter, up to the one id that crosses a cut
    np.testing.assert_allclose(masses, 0.25, atol=counts[0] / counts.sum())


def test_every_block_keeps_a_row_when_one_id_dominates():
    offsets = equal_mass_boundaries([1000, 1, 1, 1, 1], 4)
    assert offsets == (0, 1, 2, 3, 5)


def test_block_dims_follow_the_power_rule():
    # p = 0.5 / 1 and 0.5 / 4; alpha 0.5 -> d_1 = 16 * (1 / 4) ** 0.5 = 8
    assert block_dims([1, 4], [0.5, 0.5], 0.5, 16) == (16, 8)
    assert block_dims([1, 4], [0.5, 0.5], 0.0, 16) == (16, 16)
    assert block_dims([1, 4], [0.5, 0.5], 0.5, 16, base_dim=8) == (8, 4)


def test_budget_plans_fit_and_grow_with_the_budget():
    counts = 1.0 / np.arange(1, 10_001)
    sizes = []
    for budget in (120_000, 240_000, 480_000):
        plan = plan_blocks(10_000, 32, counts=counts, alpha=0.3, budget_bytes=budget)
        assert plan.bytes <= budget
        sizes.append(plan.bytes)
    assert sizes[0] < sizes[1] < sizes[2]
    # a budget near the cap is used well, not left mostly empty
    assert sizes[2] > 0.8 * 480_000


def test_budget_below_the_smallest_plan_is_an_error():
    with pytest.raises(ValueError, match="budget_bytes`=2000 is below"):
        plan_blocks(1000, 16, alpha=0.3, budget_bytes=2000)


def test_plan_from_counts_ranks_and_remaps():
    counts = np.array([0, 10, 1, 50, 2, 0, 7, 3])
    plan = plan_blocks(8, 4, counts=counts, num_blocks=2, alpha=1.0)
    assert plan.remapped
    # ranking 3,1,6,4?.. 50 holds 50/73 of the mass: block 0 is id 3 alone
    assert plan.rows == (1, 7)
    assert plan.blocks[0].mass == pytest.approx(50 / 73)


def test_remap_can_be_forced_for_a_ranking_that_will_change():
    assert plan_blocks(10, 4, remap=True).remapped
    assert plan_blocks(4, 8, counts=[9, 5, 5, 1], remap=True).remapped


def test_sorted_counts_need_no_remap():
    plan = plan_blocks(4, 8, counts=[9, 5, 5, 1], num_blocks=2)
    assert not plan.remapped
    with pytest.raises(ValueError, match="remap=False"):
        plan_blocks(4, 8, counts=[1, 5, 5, 9], num_blocks=2, remap=False)


def test_explicit_boundaries():
    plan = plan_blocks(100, 8, boundaries=[10, 40], alpha=0.0)
    assert plan.offsets == (0, 10, 40, 100)
    assert plan.dims == (8, 8, 8)
    with pytest.raises(ValueError, match="boundaries"):
        plan_blocks(100, 8, boundaries=[40, 10])
    with pytest.raises(ValueError, match="boundaries"):
        plan_blocks(100, 8, boundaries=[0, 10])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"counts": [1, -1, 2, 3]}, r"counts\[1\]"),
        ({"counts": [1, float("nan"), 2, 3]}, r"counts\[1\]"),
        ({"counts": [1, 2, 3]}, "input_dim is 4"),
        ({"counts": [0, 0, 0, 0]}, "sum to zero"),
        ({"num_blocks": 5}, "num_blocks"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"alpha": -1}, "alpha"),
        ({"budget_bytes": 1e9, "base_dim": 2}, "at most one"),
        ({"budget_bytes": 1e9, "budget_fraction": 0.5},
         "budget_bytes.*budget_fraction"),
        ({"base_dim": 9}, "base_dim"),
    ],
)
def test_bad_plan_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_blocks(4, 8, **kwargs)


def test_plan_accounting_is_honest():
    plan = BlockPlan(
        input_dim=1000,
        output_dim=16,
        blocks=[Block(0, 10, 16), Block(10, 100, 8), Block(100, 1000, 2)],
        remapped=True,
    )
    assert plan.embedding_params == 10 * 16 + 90 * 8 + 900 * 2
    assert plan.projection_params == 8 * 16 + 2 * 16
    assert plan.params == plan.embedding_params + plan.projection_params
    assert plan.bytes == 4 * plan.params + 4 * 1000
    assert plan.compression == pytest.approx(1000 * 16 * 4 / plan.bytes)
    np.testing.assert_array_equal(plan.block_of_rank([0, 9, 10, 99, 100, 999]),
                                  [0, 0, 1, 1, 2, 2])


def test_plan_is_immutable_and_round_trips():
    plan = plan_blocks(500, 8, counts=np.arange(500)[::-1] + 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.output_dim = 4
    assert BlockPlan.from_config(plan.get_config()) == plan
    text = str(plan)
    assert "BlockPlan: 500 ids -> dim 8" in text
    assert f"{plan.params:,} params" in text


@pytest.mark.parametrize(
    "blocks, message",
    [
        ([Block(0, 5, 4), Block(6, 10, 4)], "contiguous"),
        ([Block(0, 5, 4)], "input_dim is 10"),
        ([Block(0, 10, 9)], "dims must be"),
        ([], "at least one"),
    ],
)
def test_invalid_plans(blocks, message):
    with pytest.raises(ValueError, match=message):
        BlockPlan(10, 8, blocks)


def test_huge_counts_give_finite_masses():
    counts = np.full(50, 1e308)
    counts[:5] = 1.7e308
    plan = plan_blocks(50, 8, counts=counts, num_blocks=3)
    masses = [b.mass for b in plan.blocks]
    assert np.all(np.isfinite(masses)) and sum(masses) == pytest.approx(1.0)


@pytest.mark.parametrize("call, message", [
    (lambda: plan_blocks("100", 16), "input_dim"),
    (lambda: plan_blocks(100, 16.5), "output_dim"),
    (lambda: plan_blocks(100, 16, num_blocks="4"), "num_blocks"),
    (lambda: plan_blocks(100, 16, boundaries=20), "boundaries"),
    (lambda: plan_blocks(100, 16, boundaries=[10, "x"]), r"boundaries\[1\]"),
    (lambda: plan_blocks(100, 16, alpha=None), "alpha"),
    (lambda: plan_blocks(100, 16, budget_bytes=float("nan")), "budget_bytes"),
    (lambda: plan_blocks(100, 16, budget_fraction=2), "budget_fraction"),
    (lambda: plan_blocks(100, 16, round_dims="yes"), "round_dims"),
])
def test_bad_argument_types_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("multiple", [4, 8])
def test_rounded_dims_are_multiples_and_respect_the_budget(multiple):
    counts = zipf_counts(100_000, 1.1)
    for budget in (4_000_000, 6_400_000, 12_000_000):
        plan = plan_blocks(100_000, 64, counts=counts, num_blocks=5, alpha=0.4,
                           budget_bytes=budget, round_dims=multiple)
        assert plan.bytes <= budget
        assert all(d % multiple == 0 or d == 64 for d in plan.dims)
    with pytest.raises(ValueError, match="narrowest dim \\(8\\)"):
        plan_blocks(100_000, 64, counts=counts, num_blocks=5, budget_bytes=2_000_000,
                    round_dims=8)


def test_a_budget_that_fits_the_full_table_gives_the_full_table():
    # full-width blocks need no projection, so a budget of exactly
    # input_dim x output_dim is met by every block at output_dim
    plan = plan_blocks(1000, 8, alpha=0.0, num_blocks=4, budget_bytes=32_000)
    assert plan.dims == (8, 8, 8, 8) and plan.params == 8000
