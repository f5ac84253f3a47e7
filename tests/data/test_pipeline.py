"""zoo.data.pipeline off TensorFlow: the training batches a JAX or torch run reads."""

from __future__ import annotations

import numpy as np

from zoo.data.pipeline import TrainingBatches


def _batches(**options) -> TrainingBatches:
    labels = np.repeat([0, 1, 2], [30, 6, 4])
    pixels = np.arange(len(labels), dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 2, 2, 3), np.uint8
    )
    weights = np.linspace(0.5, 2.0, len(labels)).astype(np.float32)
    return TrainingBatches(
        pixels, labels, num_classes=3, batch_size=8, sample_weights=weights, **options
    )


def _epoch(batches: TrainingBatches) -> list[np.ndarray]:
    return [batches[i] for i in range(len(batches))]


def test_each_epoch_shows_every_image_once_in_a_new_order():
    batches = _batches(seed=3)
    first = _epoch(batches)
    rows = np.concatenate([x[:, 0, 0, 0] for x, _, _ in first]).astype(int)
    assert sorted(rows) == list(range(40)) and len(batches) == 5
    for x, y, w in first:  # labels and weights travel with their image
        index = x[:, 0, 0, 0].astype(int)
        assert (y.argmax(1) == batches.labels[index]).all()
        np.testing.assert_array_equal(w, batches.weights[index])
        assert x.dtype == np.float32 and y.shape[1] == 3
    batches.on_epoch_end()
    again = np.concatenate([x[:, 0, 0, 0] for x, _, _ in _epoch(batches)]).astype(int)
    assert sorted(again) == sorted(rows) and list(again) != list(rows)
    same_seed = np.concatenate([x[:, 0, 0, 0] for x, _, _ in _epoch(_batches(seed=3))])
    assert list(same_seed.astype(int)) == list(rows)  # reproducible from the seed


def test_balanced_draws_show_each_class_about_equally_often():
    batches = _batches(balanced=True, seed=0)
    labels = []
    for _ in range(50):
        labels += [int(c) for _, y, _ in _epoch(batches) for c in y.argmax(1)]
        batches.on_epoch_end()
    counts = np.bincount(labels, minlength=3) / len(labels)
    np.testing.assert_allclose(counts, 1 / 3, atol=0.03)


def test_the_augmenter_sees_each_batch():
    seen = []

    def augmenter(images, training):
        seen.append(training)
        return images + 1

    batches = _batches(augmenter=augmenter)
    x, _, _ = batches[0]
    plain = _batches()[0][0]
    np.testing.assert_array_equal(x, plain + 1)
    assert seen == [True]
