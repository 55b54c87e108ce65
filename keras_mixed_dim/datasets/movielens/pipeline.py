"""tf.data input pipelines (TensorFlow-only module)."""

import tensorflow as tf


def ratings_dataset(features, targets, batch_size, shuffle=False, seed=0):
    """Batches `(features, targets)` arrays through tf.data.

    The arrays are sliced in place (one copy in memory, no second parse of
    the source file), shuffled each epoch with a bounded buffer when asked,
    batched and prefetched.

    Args:
        features: Dict of equal-length arrays (e.g. `{"user": ..., "item": ...}`).
        targets: Array of targets, same length.
        batch_size: Batch size.
        shuffle: Whether to reshuffle each epoch.
        seed: Shuffle seed.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: {batch_size!r}")
    dataset = tf.data.Dataset.from_tensor_slices((features, targets))
    if shuffle:
        buffer = min(len(targets), 1_000_000)
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
