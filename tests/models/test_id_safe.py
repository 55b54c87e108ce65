"""IdSafeModel: ids that Keras's input cast would wrap become out of range."""

import keras
import numpy as np
import pytest

import keras_mixed_dim
from keras_mixed_dim import IdSafeModel
from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.models import sanitize_id_array


def single_input_model():
    keras.utils.set_random_seed(0)
    ids = keras.Input(shape=(), dtype="int32", name="item")
    vectors = MixedDimEmbedding(10, 4, alpha=0.5, embeddings_initializer="ones")(ids)
    return IdSafeModel(ids, keras.layers.Dense(1, bias_initializer="ones")(vectors))


def test_wide_ids_never_wrap_onto_valid_ids():
    model = single_input_model()
    wide = np.array([2**32 + 5, 5, -1, 2**31], np.int64)
    out = model.predict(wide, verbose=0)
    zero_id_output = model.predict(np.array([-1]), verbose=0)[0]
    np.testing.assert_allclose(out[0], zero_id_output)
    np.testing.assert_allclose(out[3], zero_id_output)
    assert not np.allclose(out[1], zero_id_output)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(wide)), out, rtol=1e-6)
    np.testing.assert_allclose(model.predict_on_batch(wide), out, rtol=1e-6)


def test_dict_and_list_inputs_and_fit_are_sanitized():
    user = keras.Input(shape=(), dtype="int32", name="user")
    age = keras.Input(shape=(), dtype="float32", name="age")
    vectors = MixedDimEmbedding(10, 4, alpha=0.0)(user)
    x = keras.layers.Concatenate()([vectors, keras.layers.Reshape((1,))(age)])
    model = IdSafeModel({"user": user, "age": age}, keras.layers.Dense(1)(x))
    features = {"user": np.array([2**33, 1], np.int64),
                "age": np.array([2.0**40, 3.0], np.float32)}
    clean = model.sanitize_inputs(features)
    np.testing.assert_array_equal(clean["user"], [-1, 1])
    assert clean["age"] is features["age"]  # not an id input: untouched
    model.compile("sgd", "mse")
    model.fit(features, np.zeros((2, 1)), epochs=1, verbose=0,
              validation_data=(features, np.zeros((2, 1))))
    as_list = model.sanitize_inputs([features["user"], features["age"]])
    assert isinstance(as_list, list)


def test_sanitize_id_array_rules():
    np.testing.assert_array_equal(
        sanitize_id_array(np.array([1.0, 1.5, np.nan, np.inf, 3e10, -2.0])),
        [1, -1, -1, -1, -1, -2])
    np.testing.assert_array_equal(
        sanitize_id_array(np.array([2**31, 2**31 - 1], np.uint64)), [-1, 2**31 - 1])
    strings = np.array(["a"])
    assert sanitize_id_array(strings) is not None


def test_the_package_models_are_id_safe_and_reload_as_such(tmp_path):
    from keras_mixed_dim.models import make_embedding
    from keras_mixed_dim.models import matrix_factorization

    layers = [make_embedding("mixed", 20, 4, name=n)
              for n in ("user_embedding", "item_embedding")]
    model = matrix_factorization(20, 20, *layers)
    assert isinstance(model, keras_mixed_dim.IdSafeModel)
    path = tmp_path / "mf.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, IdSafeModel)
    wide = {"user": np.array([2**32 + 3], np.int64), "item": np.array([3])}
    out = loaded.predict(wide, verbose=0)
    expected = loaded.predict({"user": np.array([-1]), "item": np.array([3])},
                              verbose=0)
    np.testing.assert_allclose(out, expected)


@pytest.mark.parametrize("value", ["x", None])
def test_non_numeric_inputs_pass_through_to_keras(value):
    model = single_input_model()
    if value is None:
        assert model.sanitize_inputs(None) is None
    else:
        strings = np.array([value])
        clean = model.sanitize_inputs(strings)
        assert clean.dtype == strings.dtype and clean.tolist() == [value]
        # Keras's own input conversion names the dtype (every backend)
        with pytest.raises(ValueError, match="Invalid dtype: str32"):
            model.predict(strings, verbose=0)
