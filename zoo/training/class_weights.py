"""Per-class loss weights: none, inverse frequency, or effective number of samples.

Effective number (Cui et al. 2019, CVPR), used by Steppan & Hanke with beta = 0.999:
``w_c ∝ (1 − β) / (1 − β^{n_c})``. Weights are scaled so that the weighted number of training
images equals the real one, which keeps the loss (and so the learning rate) comparable.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from zoo.errors import ZooError

SCHEMES = ("none", "inverse", "effective")


def class_weights(counts, *, scheme: str = "none", beta: float = 0.999) -> np.ndarray:
    """Loss weight of each class given its number of training images."""
    counts = np.asarray(counts, dtype=float)
    if scheme == "none":
        return np.ones_like(counts)
    if scheme == "inverse":
        labels = np.repeat(np.arange(len(counts)), counts.astype(int))
        return compute_class_weight("balanced", classes=np.arange(len(counts)), y=labels)
    if scheme == "effective":
        if not 0 < beta < 1:
            raise ZooError(f"class_weight_beta must be in (0, 1); got {beta}.")
        raw = (1 - beta) / (1 - np.power(beta, counts))
        return raw * counts.sum() / (raw * counts).sum()
    raise ZooError(f"class_weight must be one of {', '.join(SCHEMES)}; got {scheme!r}.")
