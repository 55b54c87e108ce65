"""`slot_variables` and `slot_initial_value` against the slots Keras's own
optimizers create (their names, shapes and starting values)."""

import keras
import numpy as np
from keras import ops

from keras_mixed_dim.layers.slots import slot_initial_value
from keras_mixed_dim.layers.slots import slot_variables


def tables():
    # `items` is a prefix of `items_2`'s path: only its own slots may match
    items = keras.Variable(ops.zeros((6, 3)), name="items")
    items_2 = keras.Variable(ops.zeros((6, 3)), name="items_2")
    bias = keras.Variable(ops.zeros((3,)), name="bias")
    return items, items_2, bias


def test_slot_variables_are_the_row_slots_of_that_table_only():
    items, items_2, bias = tables()
    adam = keras.optimizers.Adam()
    adam.build([items, items_2, bias])
    found = slot_variables(adam, items)
    expected = [v for v in adam.variables
                if v.name in (f"{items.path}_momentum", f"{items.path}_velocity")]
    assert len(expected) == 2
    assert [id(v) for v in found] == [id(v) for v in expected]
    assert slot_variables(adam, bias) and all(v.shape == (3,) for v in slot_variables(adam, bias))
    assert slot_variables(None, items) == []


def test_per_row_slots_count_and_other_shapes_do_not():
    items, _, _ = tables()
    per_row = keras.Variable(ops.zeros((6,)), name=f"{items.path}_accumulator")
    wrong = keras.Variable(ops.zeros((6, 2)), name=f"{items.path}_other")

    class Owner:
        variables = [per_row, wrong]

    assert [id(v) for v in slot_variables(Owner(), items)] == [id(per_row)]


def test_initial_values_are_those_keras_gives_a_fresh_slot():
    items, _, _ = tables()
    for optimizer in (keras.optimizers.Adagrad(initial_accumulator_value=0.3),
                      keras.optimizers.Adam(),
                      keras.optimizers.Ftrl(initial_accumulator_value=0.2),
                      keras.optimizers.LossScaleOptimizer(
                          keras.optimizers.Adagrad(initial_accumulator_value=0.7))):
        optimizer.build([items])
        slots = slot_variables(optimizer, items)
        assert slots, optimizer
        for slot in slots:
            fresh = np.unique(ops.convert_to_numpy(slot))
            assert fresh.size == 1
            assert slot_initial_value(optimizer, slot) == np.float32(fresh[0]), slot.name


def test_an_optimizer_with_reset_slot_value_decides():
    items, _, _ = tables()
    adam = keras.optimizers.Adam()
    adam.build([items])
    adam.reset_slot_value = lambda slot: f"reset {slot.name}"
    slot = slot_variables(adam, items)[0]
    assert slot_initial_value(adam, slot) == f"reset {slot.name}"
