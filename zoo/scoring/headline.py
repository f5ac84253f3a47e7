"""The headline scores of ``member.json`` and ``ensemble.json`` (``metrics.<part>``) and zoo's
one balanced accuracy, without scikit-learn (fast to import, the same numbers).

Balanced accuracy is the mean per-class recall over the classes present (optionally weighted);
macro AUC is the mean one-vs-rest AUC over the classes present, from ranks:
AUC = (Σ ranks of positives − n₊(n₊+1)/2) / (n₊ n₋), ties sharing their average rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata


def balanced_accuracy(
    true_labels, pred_labels, weights=None, n_classes: int | None = None
) -> float:
    """Mean per-class recall of ``pred_labels`` over the classes present in ``true_labels``
    (each image counted with its weight; a prediction of -1, "undecided", is always wrong)."""
    true_labels = np.asarray(true_labels, dtype=np.intp)
    w = np.ones(len(true_labels)) if weights is None else np.asarray(weights, dtype=float)
    k = int(n_classes if n_classes is not None else (true_labels.max(initial=-1) + 1))
    hit = true_labels == np.asarray(pred_labels)
    denom = np.bincount(true_labels, weights=w, minlength=k)
    num = np.bincount(true_labels, weights=w * hit, minlength=k)
    present = denom > 0
    return float(np.mean(num[present] / denom[present]))


def headline_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """``balanced_accuracy`` (argmax), ``accuracy``, ``macro_auc`` (None with fewer than two
    classes present) and ``n_images``."""
    labels = np.asarray(labels, dtype=np.intp)
    n = len(labels)
    if n == 0:
        return {"balanced_accuracy": None, "accuracy": None, "macro_auc": None, "n_images": 0}
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities.argmax(axis=1)
    present = np.unique(labels)
    macro_auc = None
    if len(present) > 1:
        ranks = _ranks(probabilities[:, present])
        aucs = []
        for j, c in enumerate(present):
            positive = labels == c
            n_pos = int(positive.sum())
            aucs.append(
                (ranks[positive, j].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos))
            )
        macro_auc = float(np.mean(aucs))
    return {
        "balanced_accuracy": balanced_accuracy(labels, predicted),
        "accuracy": float(np.mean(predicted == labels)),
        "macro_auc": macro_auc,
        "n_images": int(n),
    }


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks down each column, ties sharing their average rank.

    One quicksort per column; scipy's tie-aware ranking only for columns that have ties
    (three times faster on untied probabilities).
    """
    order = np.argsort(scores, axis=0)
    ranks = np.empty(scores.shape, dtype=np.float64)
    steps = np.arange(1, len(scores) + 1, dtype=np.float64)
    for j in range(scores.shape[1]):
        column = scores[order[:, j], j]
        if (column[1:] == column[:-1]).any():
            ranks[:, j] = rankdata(scores[:, j])
        else:
            ranks[order[:, j], j] = steps
    return ranks
