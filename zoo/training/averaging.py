"""Stochastic weight averaging (Izmailov et al. 2018): a running mean of a model's weights.

The mean is kept in float64 over every variable of the model (batch-norm statistics too:
:func:`averaged_into` recomputes those for the averaged weights, since an average of moving
statistics does not describe the activations of an average of weights).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from zoo.recipes.specs import StageSpec
from zoo.store.workspace import atomic_path
from zoo.training.batchnorm import recompute_statistics
from zoo.training.finetune import prepare_backbone


class WeightAverage:
    """The running mean of a model's weights at the ends of the epochs in ``epochs``."""

    def __init__(self, mean: list[np.ndarray] | None = None, epochs: list[int] | None = None):
        self.mean = mean
        self.epochs = list(epochs or [])

    def add(self, model: keras.Model, epoch: int) -> None:
        """Fold the model's weights as they are now (the end of ``epoch``) into the mean."""
        weights = [np.asarray(w, dtype=np.float64) for w in model.get_weights()]
        if self.mean is None:
            self.mean = weights
        else:
            n = len(self.epochs) + 1
            self.mean = [m + (w - m) / n for m, w in zip(self.mean, weights, strict=True)]
        self.epochs.append(int(epoch))

    def assign(self, model: keras.Model) -> None:
        """Set the model's weights to the mean (each in its variable's dtype)."""
        dtypes = [w.dtype for w in model.get_weights()]
        model.set_weights([m.astype(d) for m, d in zip(self.mean, dtypes, strict=True)])

    def save(self, file: Path) -> None:
        """Write the mean and its epochs to ``file`` (``.npz``) atomically."""
        arrays = {f"w{i}": m for i, m in enumerate(self.mean)}
        with atomic_path(file, suffix=".npz") as tmp, open(tmp, "wb") as out:
            np.savez(out, epochs=np.asarray(self.epochs, dtype=np.int64), **arrays)

    @classmethod
    def load(cls, file: Path) -> WeightAverage:
        with np.load(file) as data:
            count = len(data.files) - 1
            return cls([data[f"w{i}"] for i in range(count)], data["epochs"].tolist())


def averaged_into(
    model: keras.Model,
    average: WeightAverage,
    stage: StageSpec,
    pixels: np.ndarray,
    *,
    batch_size: int,
    seed: int = 0,
) -> int:
    """Put the averaged weights into ``model`` and recompute the statistics of the batch-norm
    layers that trained in ``stage`` over all of ``pixels``; returns the batches used. The
    layers' trainable flags are as they were afterwards."""
    average.assign(model)
    features = model.get_layer("features")
    flags = [(layer, layer.trainable) for layer in features._flatten_layers(include_self=True)]
    prepare_backbone(features, stage)
    try:
        batches = -(-len(pixels) // batch_size)
        return recompute_statistics(
            model, pixels, batch_size=batch_size, max_batches=batches, seed=seed
        )
    finally:
        for layer, trainable in flags:
            layer.trainable = trainable
