"""SparseRowOptimizer under tf.distribute: MirroredStrategy over 2 logical
CPUs against one device (in a subprocess, since the logical devices must be
configured before TensorFlow starts), and the strategies it refuses.

MultiWorkerMirroredStrategy (two worker processes) is in
tests/backend/tensorflow/test_multiworker.py.
"""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="tf.distribute needs the TensorFlow backend")

TABLES = {  # path -> (id column, the ids of its first row and past its last)
    "users/embeddings": (0, 0, 60),
    "items/block_0_embeddings": (1, 0, 100),
    "items/block_1_embeddings": (1, 100, 2200),
}


def _slots(values, table):
    prefix = table.replace("/", "_") + "_"
    return [path for path in values if path.startswith("optimizer/")
            and path.rsplit("/", 1)[-1].startswith(prefix)]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_mirrored_two_replicas_match_one_device(run_python):
    # one process for the three table optimizers: TensorFlow starts once
    out = run_python.last_json(run_python.program("mirrored_sparse_rows.py"))
    assert out["replicas"] == 2
    for kind in ("sgd", "adagrad", "adam"):
        _check_mirrored_run(out, kind)


def _check_mirrored_run(out, kind):
    run = out[kind]
    before, single, mirrored = run["before"], run["single"], run["mirrored"]
    assert run["iterations"] == 4  # one update per global batch
    # the big tables' gradients reach the row update as IndexedSlices
    gradients = dict(run["gradients"])
    assert gradients["users/embeddings"] == "IndexedSlices"
    assert gradients["items/block_1_embeddings"] == "IndexedSlices"

    # (1) the global batch's gradient applied once: the one-device weights
    assert mirrored.keys() == single.keys()
    for path in single:
        np.testing.assert_allclose(mirrored[path], single[path], rtol=1e-6, atol=1e-6,
                                   err_msg=path)

    # (2) rows no replica looked up, and their slots, are bit-for-bit unchanged
    ids = np.array(out["ids"])
    expected_slots = {"sgd": 0, "adagrad": 1, "adam": 2}[kind]
    for table, (column, start, stop) in TABLES.items():
        used = np.unique(ids[:, column])
        used = used[(used >= start) & (used < stop)] - start
        untouched = np.setdiff1d(np.arange(stop - start), used)
        assert len(untouched) >= 20 and len(used) >= 20, table
        slots = _slots(mirrored, table)
        assert len(slots) == expected_slots, (table, slots)
        for path in (table, *slots):
            new, old = np.array(mirrored[path]), np.array(before[path])
            np.testing.assert_array_equal(new[untouched], old[untouched], err_msg=path)
        new, old = np.array(mirrored[table]), np.array(before[table])
        assert np.all(np.any(new[used] != old[used], axis=1)), table

    # (3) every replica holds the same value of every table, slot and weight
    equal = run["replicas_equal"]
    for table in TABLES:
        assert equal[table], table
        for slot in _slots(mirrored, table):
            assert equal[slot.removeprefix("optimizer/")], slot
    assert all(equal.values()), [path for path, same in equal.items() if not same]


def _model():
    inputs = keras.Input((1,), dtype="int32")
    table = keras.layers.Embedding(30, 4, name="table")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(table)))


def test_one_device_strategy_matches_no_strategy():
    import tensorflow as tf

    from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer

    x = np.arange(16)[:, None].astype("int32") % 10
    y = np.ones((16, 1), "float32")
    weights = []
    for scope in (tf.distribute.get_strategy(), tf.distribute.OneDeviceStrategy("/cpu:0")):
        with scope.scope():
            keras.utils.set_random_seed(0)
            model = _model()
            model.compile(SparseRowOptimizer("sgd", table_optimizer="adam",
                                             table_learning_rate=0.1), "mse")
        model.fit(x, y, batch_size=8, verbose=0)
        weights.append([keras.ops.convert_to_numpy(w) for w in model.weights])
    for one, other in zip(*weights):
        np.testing.assert_array_equal(one, other)


def test_unsupported_strategy_raises_naming_it():
    import tensorflow as tf

    from keras_mixed_dim.optimizers.sparse_rows import SparseRowOptimizer

    with tf.distribute.experimental.CentralStorageStrategy().scope():
        model = _model()
        model.compile(SparseRowOptimizer("sgd", table_optimizer="adagrad"), "mse")
    with pytest.raises(ValueError, match="CentralStorageStrategy"):
        model.fit(np.zeros((8, 1), "int32"), np.zeros((8, 1), "float32"), verbose=0)


def test_parameter_server_strategy_is_refused():
    import tensorflow as tf

    from keras_mixed_dim.backend.tensorflow.sparse_rows import check_strategy

    # The check reads only the type: a ParameterServerStrategy needs a
    # cluster of servers to construct.
    strategy = object.__new__(tf.distribute.experimental.ParameterServerStrategy)
    with pytest.raises(ValueError, match="ParameterServerStrategy.*dense table updates"):
        check_strategy(strategy)
    check_strategy(tf.distribute.MirroredStrategy(["/cpu:0"]))
