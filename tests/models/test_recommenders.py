"""MF and NCF with uniform and mixed-dimension embeddings."""

import keras
import numpy as np
import pytest
from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.datasets import Vocabulary
from keras_mixed_dim.datasets import synthetic_ratings
from keras_mixed_dim.models import make_embedding
from keras_mixed_dim.models import matrix_factorization
from keras_mixed_dim.models import neural_cf


@pytest.mark.parametrize("model_fn", ["mf", "ncf"])
@pytest.mark.parametrize("kind", ["uniform", "mixed"])
def test_models_learn_synthetic_ratings(model_fn, kind):
    ratings = synthetic_ratings(num_users=300, num_items=600, num_ratings=30_000,
                                rank=4, noise=0.1, seed=0)
    users = Vocabulary.from_values(ratings.users)
    items = Vocabulary.from_values(ratings.items)
    layers = [
        make_embedding(kind, vocab.size, 8, counts=vocab.index_counts, name=name)
        for name, vocab in (("user_embedding", users), ("item_embedding", items))
    ]
    mean = float(ratings.ratings.mean())
    if model_fn == "mf":
        model = matrix_factorization(users.size, items.size, *layers, global_mean=mean)
    else:
        model = neural_cf(*layers, global_mean=mean)
    assert isinstance(layers[0], MixedDimEmbedding) == (kind == "mixed")
    if kind == "mixed":
        assert not layers[0].plan.remapped  # vocab indices are already ranked
    features = {"user": users.lookup(ratings.users), "item": items.lookup(ratings.items)}
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(features, ratings.ratings, epochs=4, batch_size=512, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0]
    assert losses[-1] < float(np.var(ratings.ratings))
