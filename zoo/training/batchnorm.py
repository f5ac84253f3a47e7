"""Precise batch-norm statistics (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm").

Batch normalisation keeps an exponential moving average of batch statistics for inference.
In short runs — a few hundred steps, as on the demo set or in the first epochs on a CPU —
that average lags far behind the weights, and a network that is 99 % right in training
mode predicts one class at inference. Recomputing the statistics as a plain average over a
few batches of un-augmented training images, with the weights as they are, fixes this at
the cost of a few forward passes per epoch.
"""

from __future__ import annotations

import keras
import numpy as np


def trainable_batchnorms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """BatchNormalization layers that train (frozen ones keep their statistics)."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def recompute_statistics(
    model: keras.Model,
    pixels: np.ndarray,
    *,
    batch_size: int = 64,
    max_batches: int = 32,
    seed: int = 0,
) -> int:
    """Replace the moving mean/variance of every trainable BatchNorm layer by the average
    over up to ``max_batches`` batches of ``pixels``; returns the number of batches used."""
    layers = trainable_batchnorms(model)
    if not layers or len(pixels) == 0:
        return 0
    if len(model.inputs) > 1:  # image and metadata: every batch norm is in the image part
        model = model.get_layer("features")
    order = np.random.default_rng(seed).permutation(len(pixels))
    momentum = [layer.momentum for layer in layers]
    used = 0
    try:
        for start in range(0, min(len(pixels), batch_size * max_batches), batch_size):
            for layer in layers:  # running mean of batch statistics: weight 1/(k+1) for batch k
                layer.momentum = used / (used + 1)
            batch = np.asarray(pixels[np.sort(order[start : start + batch_size])], dtype=np.float32)
            model(batch, training=True)
            used += 1
    finally:
        for layer, value in zip(layers, momentum, strict=True):
            layer.momentum = value
    return used
