"""DLRM's pairwise dot interaction."""

import keras
import numpy as np
import pytest


def test_dot_interaction_gives_upper_triangle_dot_products():
    from keras_mixed_dim.layers.dot_interaction import DotInteraction

    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=(5, 4)).astype("float32") for _ in range(4)]
    out = keras.ops.convert_to_numpy(DotInteraction()(vectors))
    expected = np.stack(
        [np.sum(vectors[i] * vectors[j], axis=1) for i in range(4) for j in range(i + 1, 4)],
        axis=1,
    )
    assert out.shape == (5, 6)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_blocks_of_vectors_give_the_pairs_of_their_vectors_in_order():
    from keras_mixed_dim.layers.dot_interaction import DotInteraction

    rng = np.random.default_rng(1)
    vectors = [rng.normal(size=(5, 4)).astype("float32") for _ in range(6)]
    block = np.stack(vectors[1:4], axis=1)  # (5, 3, 4): vectors 1, 2, 3
    expected = np.stack(
        [np.sum(vectors[i] * vectors[j], axis=1) for i in range(6) for j in range(i + 1, 6)],
        axis=1)
    out = keras.ops.convert_to_numpy(
        DotInteraction()([vectors[0], block, vectors[4], vectors[5][:, None, :]]))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert DotInteraction().compute_output_shape([(5, 4), (5, 3, 4), (5, 4)]) == (5, 10)
    with pytest.raises(ValueError, match=r"\(batch, k, d\).*\(5, 2, 3, 4\)"):
        DotInteraction()([vectors[0], np.zeros((5, 2, 3, 4), "float32")])


def test_a_block_of_unknown_length_is_refused_naming_its_shape():
    from keras_mixed_dim.layers.dot_interaction import DotInteraction

    # the pairs' count is static: a block `(batch, None, d)` has no known
    # number of feature vectors
    with pytest.raises(ValueError, match=r"\(None, None, 8\)"):
        DotInteraction()([keras.Input((8,)), keras.Input((None, 8))])
