"""Scale-out on existing engines: JAX ModelParallel / DataParallel over 4 host
devices and TF MirroredStrategy over 2 logical CPUs. Each runs in its own
process, since device counts are fixed when a backend starts.

MultiWorkerMirroredStrategy (two worker processes) is in test_multiworker.py.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

JAX_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import keras, numpy as np
    from keras_mixed_dim import MixedDimEmbedding
    from keras_mixed_dim.distribute import jax_distribution, sharded_table_paths

    rng = np.random.default_rng(0)
    items = rng.integers(0, 4000, size=(2048,)).astype("int32")
    users = rng.integers(0, 1000, size=(2048,)).astype("int32")
    target = np.sin(items % 97 + users % 13).astype("float32")[:, None]

    def train(kind):
        keras.distribution.set_distribution(None)
        keras.utils.set_random_seed(0)
        layers = [MixedDimEmbedding(4000, 8, boundaries=[40, 400], alpha=0.5,
                                    name="items"),
                  keras.layers.Embedding(1000, 8, name="users")]
        if kind:
            jax_distribution(kind, layers)
        item = keras.Input((), dtype="int32", name="item")
        user = keras.Input((), dtype="int32", name="user")
        x = keras.layers.Concatenate()([layers[0](item), layers[1](user)])
        model = keras.Model({"item": item, "user": user}, keras.layers.Dense(1)(x))
        model.compile(keras.optimizers.Adam(0.01), "mse")
        history = model.fit({"item": items, "user": users}, target, batch_size=256,
                            epochs=3, shuffle=False, verbose=0)
        shards = {}
        for v in model.weights:
            if v.path in sharded_table_paths(layers, 4):
                shards[v.path] = [list(s.data.shape) for s in v.value.addressable_shards]
        return history.history["loss"], shards, len(keras.distribution.list_devices())

    plain, _, devices = train(None)
    model_parallel, shards, _ = train("model")
    data_parallel, _, _ = train("data")
    print(json.dumps({"plain": plain, "model": model_parallel, "data": data_parallel,
                      "shards": shards, "devices": devices}))
    """
)


def run_python(code, env=None, timeout=600):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=timeout, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_jax_model_parallel_shards_rows_and_matches_unsharded():
    pytest.importorskip("jax", reason="the JAX backend needs the jax package")
    out = run_python(JAX_SCRIPT, {"JAX_PLATFORMS": "cpu"})
    assert out["devices"] == 4
    np.testing.assert_allclose(out["model"], out["plain"], rtol=1e-4)
    np.testing.assert_allclose(out["data"], out["plain"], rtol=1e-4)
    # each device holds a quarter of each sharded table's rows
    expected = {"items/block_0_embeddings": 40, "items/block_1_embeddings": 360,
                "items/block_2_embeddings": 3600, "users/embeddings": 1000}
    assert set(out["shards"]) == set(expected)
    for path, rows in expected.items():
        assert [s[0] for s in out["shards"][path]] == [rows // 4] * 4, path


TF_MODEL = textwrap.dedent(
    """
    import json, os, sys
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np
    import tensorflow as tf
    import keras
    from keras_mixed_dim import MixedDimEmbedding

    def data():
        rng = np.random.default_rng(0)
        ids = rng.integers(0, 400, size=(1024, 2)).astype("int32")
        return ids, np.sin(ids.sum(axis=1, keepdims=True)).astype("float32")

    def build():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((2,), dtype="int32")
        layer = MixedDimEmbedding(400, 8, alpha=0.5, name="items")
        x = keras.layers.Flatten()(layer(inputs))
        model = keras.Model(inputs, keras.layers.Dense(1)(x))
        model.compile(keras.optimizers.SGD(0.05), "mse")
        return model
    """
)

MIRRORED = TF_MODEL + textwrap.dedent(
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    ids, target = data()
    single = build()
    single_loss = single.fit(ids, target, batch_size=128, epochs=2, shuffle=False,
                             verbose=0).history["loss"]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build()
    loss = model.fit(ids, target, batch_size=128, epochs=2, shuffle=False,
                     verbose=0).history["loss"]
    same = all(
        all(np.array_equal(r.numpy(), v.value.values[0].numpy()) for r in v.value.values)
        for v in model.trainable_variables)
    print(json.dumps({"single": single_loss, "mirrored": loss, "replicas_equal": same,
                      "replicas": strategy.num_replicas_in_sync}))
    """
)


def test_mirrored_strategy_two_logical_cpus_matches_one_device():
    out = run_python(MIRRORED)
    assert out["replicas"] == 2 and out["replicas_equal"]
    np.testing.assert_allclose(out["mirrored"], out["single"], rtol=1e-3)


def _tf_config(task, cluster=None):
    cluster = cluster or {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    return json.dumps({"cluster": cluster, "task": task})


@pytest.mark.parametrize("tf_config, chief", [
    (None, True),
    (_tf_config({"type": "worker", "index": 0}), True),
    (_tf_config({"type": "worker", "index": 1}), False),
    (_tf_config({"type": "worker", "index": 0},
                {"chief": ["127.0.0.1:3"], "worker": ["127.0.0.1:1"]}), False),
    (_tf_config({"type": "chief", "index": 0},
                {"chief": ["127.0.0.1:3"], "worker": ["127.0.0.1:1"]}), True),
])
def test_only_the_chief_keeps_outputs(tf_config, chief, monkeypatch, tmp_path):
    from keras_mixed_dim.distribute import is_chief
    from keras_mixed_dim.distribute import worker_output_path

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert is_chief() is chief
    target = tmp_path / "model.keras"
    with worker_output_path(str(target)) as path:
        pathlib.Path(path).write_text("saved")
    assert target.exists() is chief
    assert chief or not pathlib.Path(path).exists()  # the scratch copy is gone


def test_initialize_processes_reads_the_environment(monkeypatch):
    from keras_mixed_dim.distribute import initialize_processes

    monkeypatch.delenv("KERAS_DISTRIBUTION_NUM_PROCESSES", raising=False)
    assert initialize_processes() is False
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")
    assert initialize_processes() is False
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="'two'"):
        initialize_processes()


def test_strategy_scope_names_the_backend_it_needs():
    from keras_mixed_dim.distribute import strategy_scope

    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        strategy_scope("model")  # these tests run on TensorFlow
    with pytest.raises(ValueError, match="'pipeline'"):
        strategy_scope("pipeline")
    with strategy_scope(None):
        pass
