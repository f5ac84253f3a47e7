"""Pipelines over decoded pixels: shuffled, augmented in-graph, batched, prefetched.

Pixels come from :mod:`zoo.data.images` (uint8, already resized), so an epoch reads no file:
an in-memory array becomes one constant tensor; :class:`~zoo.data.images.DiskRows` (a data set
larger than the memory budget) is read batch by batch from the memory-mapped cache.
Augmentation runs on whole batches inside the tf.data graph with Keras preprocessing layers,
in parallel with the model, and batches are prefetched.

On the TensorFlow backend both pipelines are ``tf.data``; on any other backend (JAX, torch)
they are :class:`keras.utils.PyDataset` s of NumPy batches over the same decoded pixels
(:class:`PixelBatches`, :class:`TrainingBatches`), which ``fit`` and ``predict`` take on every
backend. TensorFlow is imported only where it is used.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import numpy as np

from zoo.data.images import DiskRows

if TYPE_CHECKING:
    import tensorflow as tf


def _gather(pixels):
    """A graph function: a batch of row indices → the uint8 images of those rows."""
    import tensorflow as tf

    if isinstance(pixels, DiskRows):
        shape = (None, *pixels.shape[1:])

        def read(idx):
            batch = tf.numpy_function(lambda i: pixels[i], [idx], tf.uint8, stateful=False)
            batch.set_shape(shape)
            return batch

        return read
    images = tf.constant(np.asarray(pixels))
    return lambda idx: tf.gather(images, idx)


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
    metadata: np.ndarray | None = None,
) -> tuple[tf.data.Dataset, int]:
    """An endless dataset of ``(images, one_hot, weights)`` batches and the steps per epoch.

    ``balanced`` draws every class equally often (the effective training prior is uniform).
    With ``metadata`` (one encoded row per image) the inputs are ``{"image", "metadata"}``.
    ``tf.data`` on the TensorFlow backend; a :class:`TrainingBatches` on any other.
    """
    if keras.backend.backend() != "tensorflow":
        batches = TrainingBatches(
            pixels,
            labels,
            num_classes=num_classes,
            batch_size=batch_size,
            sample_weights=sample_weights,
            augmenter=augmenter,
            balanced=balanced,
            seed=seed,
            metadata=metadata,
        )
        return batches, len(batches)
    import tensorflow as tf

    n = len(labels)
    read = _gather(pixels)
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
        batch = tf.cast(read(idx), tf.float32)
        return batch, tf.gather(targets, idx), tf.gather(weights, idx)

    dataset = indices.batch(batch_size, drop_remainder=False)
    dataset = dataset.map(_with_metadata(gather, metadata), num_parallel_calls=tf.data.AUTOTUNE)
    if augmenter is not None:
        dataset = dataset.map(
            lambda x, y, w: (_augmented(augmenter, x), y, w), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE), math.ceil(n / batch_size)


def _with_metadata(gather, metadata: np.ndarray | None):
    """A graph function of row indices: ``gather``'s result, its images joined by the rows'
    ``metadata`` as ``{"image", "metadata"}`` when there is metadata."""
    if metadata is None:
        return gather
    import tensorflow as tf

    table = tf.constant(np.asarray(metadata, np.float32))

    def joined(idx):
        images, *rest = gather(idx)
        return ({"image": images, "metadata": tf.gather(table, idx)}, *rest)

    return joined


def _augmented(augmenter, x):
    """The batch's images augmented (a batch with metadata keeps its metadata as it is)."""
    if isinstance(x, dict):
        return {**x, "image": augmenter(x["image"], training=True)}
    return augmenter(x, training=True)


def model_inputs(images, metadata: np.ndarray | None):
    """What a model takes for a batch: the images, or ``{"image", "metadata"}``."""
    return images if metadata is None else {"image": images, "metadata": metadata}


def inference_dataset(
    pixels: np.ndarray, *, batch_size: int, metadata: np.ndarray | None = None
) -> tf.data.Dataset | PixelBatches:
    """Batches of float32 images in order (no labels), for ``model.predict`` (with
    ``metadata``: ``{"image", "metadata"}`` batches): ``tf.data``, prefetched, on the
    TensorFlow backend; a :class:`PixelBatches` on any other."""
    if keras.backend.backend() != "tensorflow":
        return PixelBatches(pixels, batch_size=batch_size, metadata=metadata)
    import tensorflow as tf

    read = _gather(pixels)
    images = _with_metadata(lambda idx: (tf.cast(read(idx), tf.float32),), metadata)
    return (
        tf.data.Dataset.range(len(pixels))
        .batch(batch_size)
        .map(lambda idx: images(idx)[0], num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


class PixelBatches(keras.utils.PyDataset):
    """Decoded uint8 ``pixels`` (an array or :class:`~zoo.data.images.DiskRows`) as float32
    NumPy batches in order: what ``model.predict`` reads on a backend without ``tf.data``."""

    def __init__(self, pixels, *, batch_size: int, metadata: np.ndarray | None = None):
        super().__init__()
        self.pixels, self.batch_size, self.metadata = pixels, int(batch_size), metadata

    def __len__(self) -> int:
        return math.ceil(len(self.pixels) / self.batch_size)

    def __getitem__(self, index: int):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        images = np.asarray(self.pixels[rows], dtype=np.float32)
        return model_inputs(images, None if self.metadata is None else self.metadata[rows])


class TrainingBatches(keras.utils.PyDataset):
    """The training pipeline on a backend without ``tf.data`` (JAX, torch): shuffled (a new
    order each epoch, from ``seed`` and the epoch), or class-balanced draws, of ``(images,
    one_hot, weights)`` NumPy batches, augmented by the same Keras layers as on TensorFlow."""

    def __init__(
        self,
        pixels,
        labels: np.ndarray,
        *,
        num_classes: int,
        batch_size: int,
        sample_weights: np.ndarray | None = None,
        augmenter=None,
        balanced: bool = False,
        seed: int = 0,
        metadata: np.ndarray | None = None,
    ):
        super().__init__()
        self.pixels, self.labels, self.metadata = pixels, np.asarray(labels), metadata
        self.targets = np.eye(num_classes, dtype=np.float32)[self.labels]
        n = len(self.labels)
        self.weights = np.ones(n, np.float32) if sample_weights is None else sample_weights
        self.weights = np.asarray(self.weights, np.float32)
        self.batch_size, self.augmenter = int(batch_size), augmenter
        self.balanced, self.seed, self.epoch = balanced, seed, 0
        self.classes = [np.flatnonzero(self.labels == c) for c in np.unique(self.labels)]
        self._order = self._draw()

    def _draw(self) -> np.ndarray:
        """This epoch's image order: a permutation, or balanced draws (class, then image)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if not self.balanced:
            return rng.permutation(len(self.labels))
        picked = rng.integers(0, len(self.classes), len(self.labels))
        order = np.empty(len(self.labels), dtype=np.int64)
        for c, members in enumerate(self.classes):  # one draw per class, not per image
            chosen = picked == c
            order[chosen] = members[rng.integers(0, len(members), chosen.sum())]
        return order

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int):
        rows = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        images = np.asarray(self.pixels[rows], dtype=np.float32)
        if self.augmenter is not None:
            images = keras.ops.convert_to_numpy(self.augmenter(images, training=True))
        metadata = None if self.metadata is None else self.metadata[rows]
        return model_inputs(images, metadata), self.targets[rows], self.weights[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._draw()
