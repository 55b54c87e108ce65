"""The examples' harness: only the chief of a multi-worker job keeps outputs."""

import json
import pathlib
import sys

import pytest

# the harness lives beside the examples, outside the package
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "examples"))


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
    from common.outputs import is_chief
    from common.outputs import worker_output_path

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


