"""Exact counting under tf.distribute.MirroredStrategy with two replicas.

Runs in a subprocess: the two logical CPU devices must be configured before
TensorFlow initializes, which the main test process has already done.
"""


import keras
import numpy as np
import pytest

@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tf.distribute needs the TensorFlow backend")
@pytest.mark.multiprocess
def test_counts_are_exact_with_two_mirrored_replicas(run_python):
    out = run_python.last_json(run_python.program("mirrored_counts.py"))
    assert out["replicas"] == 2
    ids = np.array(out["ids"]).ravel()
    ids = ids[(ids >= 0) & (ids < 50)]
    expected = 2 * np.bincount(ids, minlength=50)  # two epochs
    np.testing.assert_array_equal(out["counts"], expected)
    assert out["recounts"] == 2
    # after re-ranking, rank order follows the counts (ties by earlier rank)
    ranks = np.array(out["remap"])
    by_rank = np.array(out["counts"])[np.argsort(ranks)]
    assert np.all(np.diff(by_rank) <= 0)
    # a StackedEmbedding's counting feature counts exactly too, and re-ranks
    stacked_ids = np.array(out["stacked_ids"])[:, 0]
    stacked_ids = stacked_ids[(stacked_ids >= 0) & (stacked_ids < 50)]
    np.testing.assert_array_equal(out["stacked_counts"],
                                  2 * np.bincount(stacked_ids, minlength=50))
    assert out["stacked_recounts"] == 2
    by_rank = np.array(out["stacked_counts"])[np.argsort(out["stacked_remap"])]
    assert np.all(np.diff(by_rank) <= 0)
