"""DLRM's pairwise dot interaction."""

import keras
import numpy as np


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
