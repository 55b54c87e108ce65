"""Fixtures shared by the backends' own lookup tests."""

import keras
import pytest


@pytest.fixture
def portable(monkeypatch):
    """Runs `fn` with the layer's portable lookup."""
    from keras_mixed_dim.layers import dynamic_embedding

    def run(fn):
        with monkeypatch.context() as patch:
            patch.setattr(dynamic_embedding, "dynamic_lookup", lambda: None)
            return fn()

    return run


@pytest.fixture
def mixed_policy():
    """Runs the test under the `mixed_float16` global policy."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")
