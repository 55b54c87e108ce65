"""make_embedding and the DLRM builder size every kind to a byte budget."""

import math

import pytest

from keras_mixed_dim import embedding_bytes
from keras_mixed_dim.budgets import BudgetTooSmall
from keras_mixed_dim.layers.hashed_memory_embedding import HashedMemoryEmbedding
from keras_mixed_dim.models.dlrm import embedding_layers
from keras_mixed_dim.models.dlrm import embedding_summary
from keras_mixed_dim.models.embeddings import EMBEDDING_KINDS
from keras_mixed_dim.models.embeddings import make_embedding
from keras_mixed_dim.models.embeddings import qr_collisions_for

N, D = 20_000, 16
UNIFORM = N * D * 4


@pytest.mark.parametrize("kind", [k for k in EMBEDDING_KINDS if k != "uniform"])
@pytest.mark.parametrize("fraction", [4, 16, 64])
def test_every_kind_meets_the_budget_or_names_its_minimum(kind, fraction):
    budget = UNIFORM / fraction
    try:
        layer = make_embedding(kind, N, D, budget_bytes=budget)
    except BudgetTooSmall as error:
        # MD's smallest plan: one float per id plus projections
        assert kind in ("mixed", "table", "table_blocks") and fraction >= 16
        assert f"budget_bytes`={budget!r}" in str(error)
        assert error.minimum > budget
        # the minimum it names is a budget that works, and is met
        assert embedding_bytes(make_embedding(kind, N, D,
                                              budget_bytes=error.minimum)) <= error.minimum
        return
    nbytes = embedding_bytes(layer)
    assert nbytes <= budget
    if kind in ("robe", "lma", "hashing", "md_qr"):
        # md_qr: block dims and collision counts are integers
        assert nbytes > (0.85 if kind == "md_qr" else 0.95) * budget, (kind, nbytes)


def test_qr_collisions_fit():
    for floats in (2 * math.sqrt(N) * D * 1.5, N * D / 4, N * D / 64):
        m = qr_collisions_for(N, D, floats)
        assert (math.ceil(N / m) + m) * D <= floats
        if m > 1:
            assert (math.ceil(N / (m - 1)) + m - 1) * D > floats


def test_dlrm_robe_shares_one_memory_within_the_budget():
    cardinalities = [5000, 300, 20]
    budget = sum(cardinalities) * 8 * 4 / 16
    layers = embedding_layers(cardinalities, 8, "robe", budget_bytes=budget)
    assert all(isinstance(l, HashedMemoryEmbedding) and l.shared_memory for l in layers)
    assert len({id(l._memory_layer) for l in layers}) == 1
    summary = embedding_summary(layers)
    assert 0.99 * budget < summary["bytes"] <= budget
    assert summary["params"] == layers[0].memory_size
    with pytest.raises(ValueError, match="budget_bytes"):
        embedding_layers(cardinalities, 8, "qr")
