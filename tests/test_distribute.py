"""Scale-out on existing engines: JAX ModelParallel / DataParallel over 4 host
devices and TF MirroredStrategy over 2 logical CPUs. Each runs in its own
process, since device counts are fixed when a backend starts.

MultiWorkerMirroredStrategy (two worker processes) is in
tests/backend/tensorflow/test_multiworker.py.
"""

import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent  # tests/


def run_jax_program(run_python, name):
    """Runs a program of tests/programs on 4 JAX host devices; its JSON."""
    pytest.importorskip("jax", reason="the JAX backend needs the jax package")
    out = run_python.last_json(run_python.program(name, env={"JAX_PLATFORMS": "cpu"}))
    assert out["devices"] == 4
    return out

@pytest.mark.multiprocess
def test_jax_model_parallel_shards_rows_and_matches_unsharded(run_python):
    out = run_jax_program(run_python, "jax_model_parallel.py")
    np.testing.assert_allclose(out["model"], out["plain"], rtol=1e-4)
    np.testing.assert_allclose(out["data"], out["plain"], rtol=1e-4)
    # each device holds a quarter of each sharded table's rows
    expected = {"items/block_0_embeddings": 40, "items/block_1_embeddings": 360,
                "items/block_2_embeddings": 3600, "users/embeddings": 1000}
    assert set(out["shards"]) == set(expected)
    for path, rows in expected.items():
        assert [s[0] for s in out["shards"][path]] == [rows // 4] * 4, path


@pytest.mark.multiprocess
def test_jax_row_steps_under_model_and_data_parallel_match_one_device(run_python):
    """SparseRowOptimizer's row train step under a keras.distribution: the
    same weights as on one device, tables sharded, no dense table gradient."""
    out = run_jax_program(run_python, "jax_row_steps_parallel.py")
    assert out["dense_warnings"] == []
    assert out["model"] < 1e-5 and out["data"] < 1e-5, out
    shards = out["model_shards"]
    assert shards, "no table was sharded"
    for path, table in shards.items():
        assert table["parts"] == [table["rows"] // 4] * 4, path


@pytest.mark.multiprocess
def test_jax_layout_map_shards_stacked_tables_and_training_matches(run_python):
    out = run_jax_program(run_python, "jax_stacked_model_parallel.py")
    # the regex `.*stacked_w.*_embeddings` split both stacked tables by rows
    # (160 and 1160 rows: a quarter on each device) and nothing else
    shards = out["shards"]
    assert shards["stacked/stacked_w8_embeddings"] == [[40, 8]] * 4
    assert shards["stacked/stacked_w4p_embeddings"] == [[290, 4]] * 4
    assert shards["stacked/stacked_w4p_projections"] == [[2, 4, 8]] * 4
    assert shards["stacked/remap"] == [[1320]] * 4
    assert sorted(out["sharded_table_paths"]) == [
        "stacked/stacked_w4p_embeddings", "stacked/stacked_w8_embeddings"]
    # training, counting and re-ranking give what they give unsharded
    np.testing.assert_allclose(out["model"], out["plain"], rtol=1e-4)
    assert out["model"][-1] < out["model"][0]
    np.testing.assert_allclose(out["out"], out["plain_out"], rtol=1e-4, atol=1e-5)
    assert out["counts"] == out["plain_counts"] == 3 * 2048
    assert out["moved"] == out["plain_moved"] and out["moved"][0] > 0


@pytest.mark.multiprocess
def test_mirrored_strategy_two_logical_cpus_matches_one_device(run_python):
    out = run_python.last_json(run_python.program("mirrored_two_cpus.py"))
    assert out["replicas"] == 2 and out["replicas_equal"]
    np.testing.assert_allclose(out["mirrored"], out["single"], rtol=1e-3)


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


def test_sharded_table_paths_take_tables_of_exactly_min_rows():
    import keras

    from keras_mixed_dim.distribute import sharded_table_paths
    from keras_mixed_dim.layers import MixedDimEmbedding
    from keras_mixed_dim.layers import StackedEmbedding
    from keras_mixed_dim.planning import Block
    from keras_mixed_dim.planning import BlockPlan

    plain = keras.layers.Embedding(8, 4, name="plain")
    md = MixedDimEmbedding(12, 4, plan=BlockPlan(12, 4, [Block(0, 4, 4), Block(4, 12, 2)]),
                           name="md")
    stacked = StackedEmbedding([6, 2], 4, name="stacked")  # one group of 8 rows
    for layer in (plain, md, stacked):
        layer.build()
    layers = [plain, md, stacked]
    assert sharded_table_paths(layers, 2, min_rows=8) == [
        "plain/embeddings", "md/block_1_embeddings", "stacked/stacked_w4_embeddings"]
    assert sharded_table_paths(layers, 2, min_rows=9) == []
    assert sharded_table_paths(layers, 2, min_rows=4) == [
        "plain/embeddings", "md/block_0_embeddings", "md/block_1_embeddings",
        "stacked/stacked_w4_embeddings"]

@pytest.mark.multiprocess
def test_two_and_four_jax_processes_shard_the_preset_tables_and_match_one(free_ports):
    """mlperf-dcnv2 at cardinalities / 1000, uniform tables: 2 and 4
    processes (jax.distributed on CPU, gloo collectives) each hold 1/N of
    every sharded table and give one process's losses step for step."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("jax", reason="the JAX backend needs the jax package")
    program = ROOT / "programs" / "jax_multiprocess_dlrm.py"
    # one CPU device per process: a forced device count would split each
    # process's tables again
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT.parent),
           "XLA_FLAGS": " ".join(flags)}
    ports = free_ports(2)
    runs = [(0, 1, ports[0]), *((i, 2, ports[0]) for i in range(2)),
            *((i, 4, ports[1]) for i in range(4))]
    procs = [subprocess.Popen(
        [sys.executable, str(program), str(i), str(n), str(port), "2", "1000", "32",
         "1"], cwd=ROOT.parent, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i, n, port in runs]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    single, sharded = outs[0], outs[1:]
    assert single["shards"]["embedding_0/block_0_embeddings"] == [40_000]
    for out in sharded:
        n = out["processes"]
        assert out["devices"] == n
        np.testing.assert_allclose(out["losses"], single["losses"], rtol=1e-5)
        # the 40M-row tables (40,000 rows here) split in N parts
        assert out["shards"]["embedding_0/block_0_embeddings"] == [40_000 // n]
        assert out["table_bytes"] < (1.04 / n) * single["table_bytes"]
