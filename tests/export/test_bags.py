"""Ragged bags in a serving signature (`RaggedBagInputs`), run through
TensorFlow's C API as TF Serving would, against `model.predict` on the
padded bags."""

import keras
import numpy as np

from keras_mixed_dim.export import RaggedBagInputs
from keras_mixed_dim.export import export_for_serving
from keras_mixed_dim.export import ragged_request
from keras_mixed_dim.models.dlrm import dlrm
from keras_mixed_dim.models.dlrm import embedding_layers

SIZES = (3, 1)
NAMES = ("tags", "site")


def padded(rows, size, pad, dtype):
    out = np.full((len(rows), size), pad, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, :min(len(row), size)] = row[:size]
    return out


def test_ragged_bags_serve_like_the_padded_model(tmp_path, run_c_api):
    keras.utils.set_random_seed(0)
    model = dlrm(embedding_layers([50, 20], 8, "table", bag_sizes=SIZES), 8,
                 bottom=(8,), top=(8,), bag_sizes=SIZES, bag_weights=True)
    # an ordinary bag, an empty one, one longer than its size (cut to 3),
    # invalid ids
    tags = [[4, 9], [], [1, 2, 3, 4, 5], [49, 50, -3]]
    site = [[7], [0], [19], [25]]
    tag_weights = [[0.5, 2.0], [], [1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 1.0, 1.0]]
    site_weights = [[1.0], [2.0], [0.5], [1.0]]
    dense = np.linspace(0, 1, 4 * 13, dtype=np.float32).reshape(4, 13)
    bags = RaggedBagInputs(model, SIZES, weights_input="categorical_weights",
                           feature_names=NAMES)
    report = export_for_serving(model, tmp_path, "bags", preprocess=bags,
                                output_names="probability")
    request = ragged_request([tags, site], [tag_weights, site_weights], NAMES)
    request["dense"] = dense
    outputs, info = run_c_api(report.path, request)
    padded_request = {
        "dense": dense,
        "categorical": np.concatenate([padded(tags, 3, -1, np.int32),
                                       padded(site, 1, -1, np.int32)], axis=1),
        "categorical_weights": np.concatenate(
            [padded(tag_weights, 3, 0, np.float32),
             padded(site_weights, 1, 0, np.float32)], axis=1)}
    expected = model.predict(padded_request, verbose=0)
    np.testing.assert_allclose(outputs["probability"], expected.reshape(-1), rtol=1e-5,
                               atol=1e-6)
    # the padded form is the model's own signature
    padded_report = export_for_serving(model, tmp_path, "padded",
                                       output_names="probability")
    padded_outputs, _ = run_c_api(padded_report.path, padded_request)
    np.testing.assert_allclose(padded_outputs["probability"], expected.reshape(-1),
                               rtol=1e-5, atol=1e-6)
    assert info["tensorflow_imported"] is False
    assert info["empty_shapes"] == {"probability": [0]}
    assert sorted(info["signature"]["inputs"]) == sorted(request)
    for key in ("tags_ids", "tags_lengths"):
        assert f"`{key}`" in info["errors"][key]["extra_axis"]


def test_lengths_that_do_not_add_up_name_the_feature():
    import pytest
    import tensorflow as tf

    model = dlrm(embedding_layers([50, 20], 8, "uniform"), 8, bottom=(8,), top=(8,),
                 bag_sizes=SIZES)
    bags = RaggedBagInputs(model, SIZES, feature_names=NAMES)
    request = {k: tf.constant(v) for k, v in ragged_request(
        [[[1, 2], [3]], [[4], [5]]], feature_names=NAMES).items()}
    request["dense"] = tf.zeros((2, 13))
    out = bags(request)
    np.testing.assert_array_equal(out["categorical"].numpy(),
                                  [[1, 2, -1, 4], [3, -1, -1, 5]])
    request["tags_lengths"] = tf.constant([2, 2], tf.int64)
    with pytest.raises(tf.errors.InvalidArgumentError, match="tags_lengths"):
        bags(request)


def test_int64_ids_beyond_the_int32_input_become_padding_not_another_id():
    import tensorflow as tf

    model = dlrm(embedding_layers([50, 20], 8, "uniform"), 8, bottom=(8,), top=(8,),
                 bag_sizes=SIZES)
    bags = RaggedBagInputs(model, SIZES, feature_names=NAMES)
    request = {k: tf.constant(v) for k, v in ragged_request(
        [[[2**32 + 3, 2], [-(2**32) + 1]], [[2**31], [5]]], feature_names=NAMES).items()}
    request["dense"] = tf.zeros((2, 13))
    np.testing.assert_array_equal(bags(request)["categorical"].numpy(),
                                  [[-1, 2, -1, -1], [-1, -1, -1, 5]])
