"""Out-of-distribution scores: is an image like the ones the model was made for?

Two scores per prediction, both higher for images that look in-distribution:

- ``msp``: the maximum softmax probability (Hendrycks & Gimpel 2017);
- ``energy``: the negative free energy ``T * logsumexp(logits / T)`` (Liu et al. 2020).

zoo's targets give probabilities, and their logits are ``log p`` only up to a per-image
constant, which is exactly what the energy at ``T = 1`` measures (``logsumexp(log p) = 0``
for every image). zoo therefore uses the energy of ``log p`` at ``T = ENERGY_TEMPERATURE``
(½): ``½ · log Σ_k p_k²``, which is defined by the probabilities alone, weighs every class
rather than only the top one, and tends to ``log max p`` as ``T → 0``.

``separation`` scores how well a score separates in-distribution from OOD images: the AUROC
(in-distribution positive) and the false-positive rate at 95 % in-distribution recall (the
fraction of OOD images scored at or above the threshold that keeps 95 % of the in-distribution
images).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

from zoo.calibration import as_logits

ENERGY_TEMPERATURE = 0.5
RECALL = 0.95


def msp(probabilities) -> np.ndarray:
    """Maximum softmax probability per image."""
    return np.asarray(probabilities, dtype=float).max(axis=1)


def energy(logits, *, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy ``T · logsumexp(logits / T)`` per image (higher: in-distribution)."""
    z = np.asarray(logits, dtype=float)
    return temperature * logsumexp(z / temperature, axis=1)


def ood_scores(probabilities) -> dict[str, np.ndarray]:
    """``{"msp": …, "energy": …}`` of class probabilities (see the module text)."""
    return {
        "msp": msp(probabilities),
        "energy": energy(as_logits(probabilities), temperature=ENERGY_TEMPERATURE),
    }


def fpr_at_recall(in_scores, out_scores, *, recall: float = RECALL) -> float:
    """Fraction of OOD scores ``>=`` the threshold that keeps ``recall`` of in-distribution."""
    threshold = np.quantile(np.asarray(in_scores, dtype=float), 1 - recall, method="lower")
    return float(np.mean(np.asarray(out_scores, dtype=float) >= threshold))


def separation(in_scores, out_scores) -> dict[str, float]:
    """AUROC (in-distribution as positive) and FPR at 95 % in-distribution recall."""
    in_scores, out_scores = np.asarray(in_scores), np.asarray(out_scores)
    y = np.r_[np.ones(len(in_scores)), np.zeros(len(out_scores))]
    return {
        "auroc": float(roc_auc_score(y, np.r_[in_scores, out_scores])),
        "fpr_at_95_recall": fpr_at_recall(in_scores, out_scores),
    }
