"""keras_mixed_dim.budgets: the budget arguments and embedding_bytes."""

import keras
import numpy as np
import pytest

import keras_mixed_dim
from keras_mixed_dim import HashedMemoryEmbedding
from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim import QREmbedding
from keras_mixed_dim import SharedMemory
from keras_mixed_dim.budgets import BudgetTooSmall
from keras_mixed_dim.budgets import budget_of
from keras_mixed_dim.budgets import resolve_budget


def test_resolve_budget_reads_one_of_bytes_and_fraction():
    assert resolve_budget() is None
    assert resolve_budget(budget_bytes=1000) == 1000.0
    assert resolve_budget(budget_fraction=0.0625, uniform_bytes=64_000) == 4000.0
    assert resolve_budget(budget_fraction="1/16", uniform_bytes=64_000) == 4000.0
    with pytest.raises(ValueError, match="budget_bytes=10, budget_fraction=0.5"):
        resolve_budget(budget_bytes=10, budget_fraction=0.5)
    for bad in (0, -1, float("nan"), float("inf"), True, "10"):
        with pytest.raises(ValueError, match="budget_bytes"):
            resolve_budget(budget_bytes=bad)
    for bad in (0, 1.5, -0.1, "1/0", "a", False):
        with pytest.raises(ValueError, match="budget_fraction"):
            resolve_budget(budget_fraction=bad, uniform_bytes=100)


def test_a_too_small_budget_names_itself_and_its_minimum_in_its_unit():
    error = budget_of(budget_fraction=0.01, uniform=10_000).too_small(2_500)
    assert isinstance(error, BudgetTooSmall) and isinstance(error, ValueError)
    assert error.minimum == 0.25
    assert "`budget_fraction`=0.01" in str(error) and "budget_fraction=0.25" in str(error)
    error = budget_of(budget_bytes=100).too_small(2_500.5)
    assert error.minimum == 2501 and "budget_bytes=2501" in str(error)


def test_embedding_bytes_of_a_model_counts_every_array_and_a_pool_once():
    memory = SharedMemory(500)
    robe = [HashedMemoryEmbedding(1000, 8, memory=memory, seed=s, name=f"robe{s}")
            for s in range(2)]
    md = MixedDimEmbedding(300, 8, counts=np.arange(300) % 7 + 1, num_blocks=2,
                           count_frequencies=True, name="md")
    qr = QREmbedding(400, 8, name="qr")
    uniform = keras.layers.Embedding(50, 8, name="uniform")
    ids = keras.Input((5,), dtype="int32")
    outputs = [layer(ids[:, i:i + 1]) for i, layer in enumerate(robe + [md, qr, uniform])]
    dense = keras.layers.Dense(1)(keras.layers.Concatenate()(
        [keras.layers.Flatten()(o) for o in outputs]))
    model = keras.Model(ids, dense)

    def stored(layer):
        return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
                   for w in layer.weights)

    # the independent count: every weight of every embedding, the shared
    # pool once, the hash constants of the ROBE layers (not weights)
    expected = (stored(memory) + sum(layer.auxiliary_bytes for layer in robe)
                + stored(md) + stored(qr) + stored(uniform))
    assert keras_mixed_dim.embedding_bytes(model) == expected
    assert keras_mixed_dim.embedding_bytes(robe + [md, qr, uniform]) == expected
    assert keras_mixed_dim.embedding_bytes(md) == md.bytes == stored(md)


def test_embedding_bytes_of_a_loaded_model_counts_a_shared_pool_once(tmp_path):
    # a loaded reader gets its pool as a call argument, not as an attribute:
    # the pool was counted once per reader and once more for itself
    memory = SharedMemory(500)
    robe = [HashedMemoryEmbedding(1000, 8, memory=memory, seed=s, name=f"robe{s}")
            for s in range(2)]
    ids = keras.Input((2,), dtype="int32")
    model = keras.Model(ids, keras.layers.Concatenate()(
        [layer(ids[:, i:i + 1]) for i, layer in enumerate(robe)]))
    model.save(tmp_path / "robe.keras")
    loaded = keras.models.load_model(tmp_path / "robe.keras")
    expected = 4 * 500 + sum(layer.auxiliary_bytes for layer in robe)
    assert keras_mixed_dim.embedding_bytes(model) == expected
    assert keras_mixed_dim.embedding_bytes(loaded) == expected
    readers = [layer for layer in loaded.layers if isinstance(layer, HashedMemoryEmbedding)]
    assert keras_mixed_dim.embedding_bytes(readers) == expected
