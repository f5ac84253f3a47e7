"""tf.data pipelines over decoded pixels: shuffled, augmented in-graph, batched, prefetched.

Pixels come from :mod:`zoo.data.images` (uint8, already resized), so an epoch reads no file.
Augmentation runs on whole batches inside the tf.data graph with Keras preprocessing layers,
in parallel with the model, and batches are prefetched.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def training_dataset(
    pixels: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    batch_size: int,
    sample_weights: np.ndarray | None = None,
    augmenter=None,
    balanced: bool = False,
    seed: int = 0,
) -> tuple[tf.data.Dataset, int]:
    """An endless dataset of ``(images, one_hot, weights)`` batches and the steps per epoch.

    ``balanced`` draws every class equally often (the effective training prior is uniform).
    """
    n = len(labels)
    images = tf.constant(np.asarray(pixels))
    targets = tf.one_hot(tf.constant(labels, tf.int32), num_classes)
    weights = tf.constant(
        np.ones(n, np.float32) if sample_weights is None else sample_weights, tf.float32
    )
    if balanced:
        per_class = [
            tf.data.Dataset.from_tensor_slices(np.flatnonzero(labels == c))
            .repeat()
            .shuffle(max(1, int((labels == c).sum())), seed=seed + c)
            for c in np.unique(labels)
        ]
        indices = tf.data.Dataset.sample_from_datasets(per_class, seed=seed)
    else:
        indices = (
            tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
        )

    def gather(idx):
        batch = tf.cast(tf.gather(images, idx), tf.float32)
        return batch, tf.gather(targets, idx), tf.gather(weights, idx)

    dataset = indices.batch(batch_size, drop_remainder=False).map(
        gather, num_parallel_calls=tf.data.AUTOTUNE
    )
    if augmenter is not None:
        dataset = dataset.map(
            lambda x, y, w: (augmenter(x, training=True), y, w), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE), math.ceil(n / batch_size)


def inference_dataset(pixels: np.ndarray, *, batch_size: int) -> tf.data.Dataset:
    """Batches of float32 images in order, prefetched (no labels)."""
    images = tf.constant(np.asarray(pixels))
    return (
        tf.data.Dataset.range(len(pixels))
        .batch(batch_size)
        .map(
            lambda idx: tf.cast(tf.gather(images, idx), tf.float32),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
