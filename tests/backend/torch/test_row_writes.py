"""PyTorch's row writes against numpy: only the named rows change, in
place (the same storage), outside autograd."""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="a PyTorch-only module")


def table():
    return keras.Variable(np.arange(24, dtype="float32").reshape(6, 4))


def test_assign_rows_changes_only_the_named_rows_in_place():
    from keras_mixed_dim.backend.torch import row_writes

    variable = table()
    storage = variable.value.data_ptr()
    expected = keras.ops.convert_to_numpy(variable.value).copy()
    values = -np.ones((2, 4), "float32")
    row_writes.assign_rows(variable, [4, 1], values)
    expected[[4, 1]] = values
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), expected)
    assert variable.value.data_ptr() == storage
    np.testing.assert_array_equal(row_writes.read_rows(variable, [1, 5]), expected[[1, 5]])


def test_write_rows_with_tensors_stays_outside_autograd():
    import torch

    from keras_mixed_dim.backend.torch import row_writes

    variable = table()
    expected = keras.ops.convert_to_numpy(variable.value).copy()
    values = torch.tensor([[7.0] * 4, [8.0] * 4], requires_grad=True)
    row_writes.write_rows(variable, torch.tensor([0, 5]), values)
    expected[0], expected[5] = 7.0, 8.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), expected)
    assert variable.value.grad_fn is None
    assert row_writes.WRITES_IN_LAYER and row_writes.MAP_AHEAD


def test_concrete_writes():
    import torch
    from keras.src.backend.common.symbolic_scope import SymbolicScope

    from keras_mixed_dim.backend.torch import row_writes

    # the layer picks a batch's writes on the host only from real values:
    # a symbolic call's placeholders would write rows that no batch named
    writes = torch.arange(8, dtype=torch.int32).reshape(1, 1, 2, 4)
    np.testing.assert_array_equal(row_writes.concrete_writes(writes), writes.numpy())
    with SymbolicScope():
        assert row_writes.concrete_writes(writes) is None
    assert row_writes.concrete_writes(torch.ones(1, 1, 2, 4, device="meta")) is None


def test_pinv_of_one_row_in_closed_form_and_of_a_matrix_as_numpy():
    import torch

    from keras_mixed_dim.backend.torch import row_writes

    rng = np.random.default_rng(0)
    for shape in ((1, 6), (3, 6)):
        matrix = rng.normal(size=shape).astype("float32")
        np.testing.assert_allclose(row_writes.pinv(torch.as_tensor(matrix)).numpy(),
                                   np.linalg.pinv(matrix.astype(np.float64)),
                                   rtol=1e-4, atol=1e-6)
    # a zero projection maps every vector to the zero row, not NaN
    np.testing.assert_array_equal(row_writes.pinv(torch.zeros((1, 6))).numpy(), 0.0)


def test_pinv_of_a_diverged_projection_is_nan_as_the_numpy_writes():
    # the torch ops (tensors off the CPU, bfloat16 tables) write the rows
    # the numpy writes do: NaN through a diverged projection, no LinAlgError
    import torch

    from keras_mixed_dim.backend.torch import row_writes

    rng = np.random.default_rng(2)
    for shape in ((1, 6), (3, 6)):
        for value in (np.nan, np.inf):
            matrix = rng.normal(size=shape).astype("float32")
            matrix[0, 2] = value
            want = row_writes.numpy_pinv(matrix)
            got = row_writes.pinv(torch.as_tensor(matrix)).numpy()
            assert got.shape == want.shape and np.isnan(want).all()
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fallback", ["qr", "hashing"])
def test_source_vectors_are_each_entrys_own_piece(fallback):
    # a written row starts from its source slot's output (a tier move) or
    # its bucket's fallback output (an admission); numpy from the parts
    import torch

    from tests.layers.test_dynamic_embedding import make
    from keras_mixed_dim.backend.torch import row_writes

    keras.utils.set_random_seed(1)
    layer = make([4, 6, 8], (4, 2, 1), fallback=fallback)
    layer.build((None, 3))
    parts = layer.part_views([keras.ops.convert_to_numpy(v).astype(np.float64)
                              for v in layer.width_tables])
    offsets, top = layer.id_map.offsets, layer.plan.fallback_range
    sources = np.array([0, offsets[1] + 1, offsets[2] + 3, -1, -1, -1, -1, offsets[3] - 1])
    buckets = np.array([2, 0, 1, 0, top - 1, -1, top, 3])
    with torch.no_grad():   # as `host_writes` calls it
        got = row_writes.source_vectors(layer, sources, buckets).numpy()
        alone = row_writes.source_vectors(layer, sources[3:5], buckets[3:5]).numpy()
    for i, (source, bucket) in enumerate(zip(sources, buckets)):
        if source >= 0:
            t = int(np.searchsorted(offsets[1:], source, side="right"))
            want = parts[f"tier_{t}_embeddings"][source - offsets[t]]
            if f"tier_{t}_projection" in parts:
                want = want @ parts[f"tier_{t}_projection"]
        elif 0 <= bucket < top:
            if fallback == "qr":
                r = layer.plan.fallback_tables[1]
                want = parts["fallback_quotient"][bucket // r] * parts["fallback_remainder"][
                    bucket % r]
            else:
                want = parts["fallback_embeddings"][bucket]
            want = want @ parts["fallback_projection"]
        else:
            want = np.zeros(layer.output_dim)
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6, err_msg=str(i))
    # one kind alone: admissions only (most batches)
    np.testing.assert_allclose(alone, got[3:5], rtol=1e-6)


def test_the_numpy_writes_of_cpu_tensors_equal_the_torch_ops(monkeypatch):
    # on a CPU the writes run in numpy on the tensors' memory; the torch
    # ops (other devices) must leave the same rows, optimizer slots, tags
    from tests.layers.test_dynamic_embedding import random_writes, run_writes, written_layer
    from keras_mixed_dim.backend.torch import row_writes

    layer, state = written_layer()
    rng = np.random.default_rng(0)
    storage = [v.value.data_ptr() for v in state]

    def writes_in(numpy_writes):
        def apply(writes):
            with monkeypatch.context() as patch:
                patch.setattr(row_writes, "NUMPY_WRITES", numpy_writes)
                layer._apply_writes(writes)
        return apply

    for per_tier in ([2, 0, 0], [0, 3, 4], [4, 1, 2]):
        writes = random_writes(layer, rng, per_tier)
        before, torch_ops = run_writes(state, writes_in(False), writes)
        _, numpy_ops = run_writes(state, writes_in(True), writes)
        for a, b in zip(numpy_ops, torch_ops):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        changed = [not np.array_equal(a, b) for a, b in zip(numpy_ops, before)]
        # rows, their Adam moments (zeroed) and the tags, in place
        assert changed[len(layer.width_tables)] and sum(changed) >= 3
    assert [v.value.data_ptr() for v in state] == storage


def test_numpy_pinv_is_the_pseudo_inverse_cut_at_1e_6_of_the_largest_singular_value():
    from keras_mixed_dim.backend.torch import row_writes

    rng = np.random.default_rng(1)
    skewed = rng.normal(size=(3, 8))
    u, s, vt = np.linalg.svd(skewed, full_matrices=False)
    cases = [rng.normal(size=(4, 16)), rng.normal(size=(2, 4)), rng.normal(size=(1, 6)),
             # singular values 1, 1e-4 (kept) and 1e-8 (cut)
             (u * [1.0, 1e-4, 1e-8]) @ vt,
             np.zeros((3, 6)), np.zeros((1, 6))]
    for matrix in cases:
        matrix = matrix.astype("float32")
        want = np.linalg.pinv(matrix.astype(np.float64), rcond=1e-6)
        got = row_writes.numpy_pinv(matrix)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(initial=1))
    # a diverged projection maps every vector to NaN rows (no LinAlgError)
    for value in (np.nan, np.inf):
        matrix = rng.normal(size=(3, 6)).astype("float32")
        matrix[1, 2] = value
        assert np.isnan(row_writes.numpy_pinv(matrix)).all()


def test_the_writes_of_a_bfloat16_layer_are_the_float32_layers_rounded():
    # numpy holds no bfloat16: such a layer's writes take the torch ops,
    # on the CPU too, and its projections' pseudo-inverse runs in float32
    import torch

    from tests.layers.test_dynamic_embedding import make, random_writes

    layers = {}
    for dtype in ("float32", "bfloat16"):
        keras.utils.set_random_seed(0)
        layers[dtype] = make([4, 5, 4], (4, 2, 1), max_writes=4, dtype=dtype)
        layers[dtype].build((None,))
    wide, narrow = layers["float32"], layers["bfloat16"]
    assert narrow.width_tables[0].value.dtype == torch.bfloat16
    # both start from the same (bfloat16) values
    for a, b in zip(wide.width_tables, narrow.width_tables):
        a.assign(keras.ops.convert_to_numpy(keras.ops.cast(b, "float32")))
    before = [keras.ops.convert_to_numpy(keras.ops.cast(v, "float32")) for v in wide.width_tables]
    writes = random_writes(wide, np.random.default_rng(0), [2, 3, 2])
    for layer in (wide, narrow):
        layer._apply_writes(writes)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(narrow.slot_tags),
                                  keras.ops.convert_to_numpy(wide.slot_tags))
    for a, b, old in zip(wide.width_tables, narrow.width_tables, before):
        want = keras.ops.convert_to_numpy(a)
        got = keras.ops.convert_to_numpy(keras.ops.cast(b, "float32"))
        assert not np.array_equal(want, old)
        np.testing.assert_allclose(got, want, rtol=0.05, atol=0.02 * np.abs(want).max())


def test_the_numpy_view_of_a_variable_follows_its_memory():
    # `_numpy` keeps a variable's numpy view on its tensor; a tensor whose
    # memory moved (`.data` set) gets a view of the new memory
    import torch

    from keras_mixed_dim.backend.torch import row_writes

    variable = table()
    view = row_writes._numpy(variable)
    assert row_writes._numpy(variable) is view
    view[1] = -1.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value)[1], -1.0)
    variable.value.data = torch.zeros(6, 4)
    row_writes._numpy(variable)[2] = 5.0
    expected = np.zeros((6, 4), "float32")
    expected[2] = 5.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), expected)


def test_a_mixed_precision_layers_torch_op_writes_reset_its_optimizer_slots(monkeypatch):
    # Keras opens a float16 autocast scope around a mixed-precision layer's
    # call, and an optimizer's slots (unlike the tables) do not opt out of
    # it: the torch ops of the writes (tensors off the CPU) must reset the
    # slots' own memory, not a float16 copy, as a float32 layer's do
    import torch

    from keras_mixed_dim.backend.torch import row_writes
    from keras_mixed_dim.layers.slots import slot_variables
    from tests.layers.test_dynamic_embedding import fill_slots, make, random_writes

    monkeypatch.setattr(row_writes, "NUMPY_WRITES", False)
    results = []
    for dtype in ("float32", "mixed_float16"):
        keras.utils.set_random_seed(0)
        layer = make([4, 5, 4], (4, 2, 1), max_writes=4, dtype=dtype)
        ids = keras.Input((3,), dtype="int32")
        model = keras.Model(ids, layer(ids))
        model.compile(keras.optimizers.Adam(0.05), "mse")
        layer.attach_optimizer(model.optimizer)
        fill_slots(model)
        writes = random_writes(layer, np.random.default_rng(0), [2, 3, 2])
        layer(torch.as_tensor(layer.lookup_ids(np.arange(1, 5))), writes=torch.as_tensor(writes))
        results.append([keras.ops.convert_to_numpy(s).copy() for v in layer.width_tables
                        for s in slot_variables(model.optimizer, v)])
    want, got = results
    assert sum(int((s == 0).all(axis=-1).sum()) for s in want) >= 7
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_a_saved_tensor_carries_no_copy_of_its_numpy_view():
    # `_numpy` keeps the view on the tensor: `torch.save` (a whole model's
    # pickle) must not write the table a second time, and a loaded tensor
    # gets a view of its own memory
    import io

    import torch

    from keras_mixed_dim.backend.torch import row_writes

    def saved(tensor):
        buffer = io.BytesIO()
        torch.save(tensor, buffer)
        return buffer

    variable = keras.Variable(np.zeros((2000, 4), "float32"))
    size = saved(variable._value).tell()
    row_writes._numpy(variable)
    buffer = saved(variable._value)
    assert buffer.tell() < size + 1000
    buffer.seek(0)
    variable._value.data = torch.load(buffer, weights_only=False).data
    row_writes._numpy(variable)[3] = 7.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value)[3], 7.0)
