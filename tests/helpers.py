"""Helpers the test files share (import them from `tests.helpers`)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_mixed_dim import MixedDimEmbedding
from keras_mixed_dim.planning import plan_blocks


def counting_model(input_dim=40, dim=8, half_life=None, bag=2):
    layer = MixedDimEmbedding(input_dim, dim, count_frequencies=True,
                              frequency_half_life=half_life, num_blocks=3, alpha=0.5,
                              name="items")
    inputs = keras.Input((bag,), dtype="int32")
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(layer(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model, layer


def shuffled_zipf_ids(num_ids, rows, exponent=1.3):
    """`(rows, 1)` ids with Zipf popularity over a random permutation."""
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, num_ids + 1) ** exponent
    return rng.permutation(num_ids)[rng.choice(num_ids, size=(rows, 1), p=p / p.sum())]


def counts_of(layer):
    return ops.convert_to_numpy(layer.frequency_counts)


def sparse_model(num_blocks, optimizer, input_dim=12, dim=4, seed=0, loss_scaled=False):
    keras.utils.set_random_seed(seed)
    from keras_mixed_dim.optimizers import SparseRowOptimizer

    layer = MixedDimEmbedding(input_dim, dim, count_frequencies=True,
                              num_blocks=num_blocks, alpha=0.0 if num_blocks == 1 else 0.5,
                              name="items")
    inputs = keras.Input((2,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(
        layer(inputs))))
    optimizer = SparseRowOptimizer(keras.optimizers.SGD(0.1), **optimizer)
    if loss_scaled:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer, "mse")
    return model, layer


def ftrl_weights(optimizer, slots, row, lr=0.1):
    """The weights FTRL-Proximal derives from its slots (numpy)."""
    accumulator, linear = (ops.convert_to_numpy(s)[row].astype("float64") for s in
                           sorted(slots, key=lambda s: not s.name.endswith("accumulator")))
    l1 = optimizer.l1_regularization_strength
    quadratic = (np.sqrt(accumulator) / lr + 2 * optimizer.l2_regularization_strength
                 + optimizer.beta / lr)
    return (np.clip(linear, -l1, l1) - linear) / quadratic


def qr_plan(**kwargs):
    counts = np.floor(1e5 / np.arange(1, 3001) ** 1.1)
    rng = np.random.default_rng(0)
    return plan_blocks(3000, 8, counts=counts[rng.permutation(3000)], num_blocks=4,
                       alpha=0.3, qr_min_rows=100, **kwargs)


def gradients_of_sum(layer, ids, jit=False):
    """Dense gradients of sum(layer(ids)) by weight name, on this backend
    (`jit`: on JAX one compiled gradient, seconds faster than op by op for
    a layer of many ops)."""
    names = [v.path.split("/")[-1] for v in layer.trainable_variables]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(ids))
        grads = tape.gradient(loss, layer.trainable_variables)
        return {n: tf.convert_to_tensor(g).numpy() for n, g in zip(names, grads)}
    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        others = [v.value for v in layer.non_trainable_variables]
        def loss(values):
            out, _ = layer.stateless_call(values, others, ids)
            return out.sum()

        grad = jax.jit(jax.grad(loss)) if jit else jax.grad(loss)
        return {n: np.asarray(g) for n, g in zip(names, grad(trainable))}
    if keras.backend.backend() == "torch":
        layer(ids).sum().backward()
        return {n: v.value.grad.cpu().numpy()
                for n, v in zip(names, layer.trainable_variables)}
    pytest.skip(f"no gradient helper for backend {keras.backend.backend()}")


def mixed_dim_outputs(layer, ids):
    """Numpy reference lookup of a MixedDimEmbedding from its weights and plan
    (full-table and quotient-remainder blocks; zeros for ids out of range)."""
    ids = np.asarray(ids)
    plan = layer.plan
    remap = ops.convert_to_numpy(layer.remap) if plan.remapped else None
    out = np.zeros(ids.shape + (plan.output_dim,), np.float32)
    for index in np.ndindex(ids.shape):
        i = int(ids[index])
        if not 0 <= i < plan.input_dim:
            continue
        rank = remap[i] if remap is not None else i
        b = int(plan.block_of_rank(rank))
        block, r = plan.blocks[b], rank - plan.offsets[b]
        if block.storage == "qr":
            q, rem = (ops.convert_to_numpy(w) for w in layer.block_qr[b])
            row = q[r // block.num_collisions] * rem[r % block.num_collisions]
        else:
            row = ops.convert_to_numpy(layer.block_embeddings[b])[r]
        proj = layer.block_projections[b]
        out[index] = row if proj is None else row @ ops.convert_to_numpy(proj)
    return out


def criteo_reference_ids(folder, categorical, oov_buckets):
    """Index per value from the vocabulary files read as plain text; unseen
    values to the documented bucket Fingerprint64(value) mod buckets."""
    import tensorflow as tf

    ids = np.zeros(categorical.shape, np.int64)
    for j in range(categorical.shape[1]):
        lines = (folder / f"C{j + 1}.tsv").read_text(encoding="utf-8").splitlines()
        index = {line.rsplit("\t", 1)[0]: i for i, line in enumerate(lines)}
        for i, value in enumerate(categorical[:, j]):
            if value in index:
                ids[i, j] = index[value]
            else:
                bucket = tf.strings.to_hash_bucket_fast([value], oov_buckets).numpy()[0]
                ids[i, j] = len(lines) + bucket
    return ids


def fake_saved_model(path):
    """A stand-in export: what `write_version` needs from a write function."""
    path.mkdir()
    (path / "saved_model.pb").write_text("x")


def trained_table(rows=600, dim=16, seed=0):
    """A float32 table whose columns shrink geometrically (a trained
    table's spectrum, roughly)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, dim)) * np.geomspace(1, 0.05, dim)).astype("float32")


def shuffled_counts(rows=600, seed=0):
    """Zipf-like counts in a random id order."""
    rng = np.random.default_rng(seed)
    return rng.permutation(1000.0 / np.arange(1, rows + 1) ** 1.1)


def embedding_with(weights, **kwargs):
    """A built `keras.layers.Embedding` holding `weights`."""
    layer = keras.layers.Embedding(*weights.shape, **kwargs)
    layer.build()
    layer.embeddings.assign(weights)
    return layer
