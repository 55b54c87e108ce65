"""`VocabularyTable` (TensorFlow only)."""

import pytest
import tensorflow as tf

from keras_mixed_dim.datasets.lookup_table import VocabularyTable


def test_lookup_of_kept_and_unknown_values():
    table = VocabularyTable(["a", "b", "c"], num_oov_buckets=2)
    got = table(tf.constant(["c", "a", "zz"])).numpy()
    assert got[:2].tolist() == [2, 0] and 3 <= got[2] < 5


@pytest.mark.parametrize("values, shown", [(["a", "b", "a"], "'a' is value 0 and value 2"),
                                           ([7, 3, 3], "'3' is value 1 and value 2"),
                                           ([b"x", "x"], "'x' is value 0 and value 1")])
def test_a_repeated_value_is_named_before_the_table_is_built(values, shown):
    with pytest.raises(ValueError, match=f"must be distinct: {shown} of `source`"):
        VocabularyTable(values)


@pytest.mark.parametrize("key_dtype, lines, shown", [
    ("string", ["a\t5", "b\t4", "a\t1"], "'a' is on line 1 and line 3"),
    ("int64", ["10\t5", "7\t4", "010\t1"], "10 is on line 1 and line 3"),
])
def test_a_repeated_line_of_a_file_is_named(tmp_path, key_dtype, lines, shown):
    path = tmp_path / "vocabulary.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"vocabulary.tsv: .*distinct; {shown}"):
        VocabularyTable(path, key_dtype=key_dtype, size=3)
