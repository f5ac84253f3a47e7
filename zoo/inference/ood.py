"""Out-of-distribution scores: is an image like the ones the model was made for?

Three scores per prediction, all higher for images that look in-distribution:

- ``msp``: the maximum softmax probability (Hendrycks & Gimpel 2017);
- ``energy``: the negative free energy ``T * logsumexp(logits / T)`` (Liu et al. 2020);
- ``mahalanobis``: minus the smallest squared Mahalanobis distance of the image's last hidden
  layer to a class mean, under class-conditional Gaussians with one shared covariance fitted
  on the training images (Lee et al. 2018, :class:`FeatureDensity`; the target-level fitting
  and caching is :mod:`zoo.inference.ood_features`). Divided by the feature dimension, so members of
  different widths average fairly.

The first two see only the probabilities, which a photograph of a cat can push as high as a
lesion can; the third sees where the image lies among the training images' features.

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
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from zoo.scoring.calibration import as_logits

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


class FeatureDensity:
    """Class means and one shared precision matrix of last-hidden-layer features (Lee et al.
    2018). The covariance of the class-centred features is Ledoit–Wolf shrunk, so it stays
    invertible when there are fewer images than feature dimensions."""

    def fit(self, features, labels) -> FeatureDensity:
        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels)
        if features.ndim != 2 or len(features) != len(labels) or len(features) < 2:
            raise ValueError(
                f"FeatureDensity.fit needs (N, D) features and N labels, N ≥ 2; got "
                f"{features.shape} and {labels.shape}"
            )
        self.classes_, index = np.unique(labels, return_inverse=True)
        self.means_ = np.stack(
            [features[index == k].mean(axis=0) for k in range(len(self.classes_))]
        )
        self.precision_ = LedoitWolf().fit(features - self.means_[index]).precision_
        return self

    def score_samples(self, features) -> np.ndarray:
        """``-min_k (f - μ_k)ᵀ Σ⁻¹ (f - μ_k) / D`` per image (higher: in-distribution)."""
        features = np.asarray(features, dtype=np.float64)
        distances = []
        for mean in self.means_:
            centred = features - mean
            distances.append(np.einsum("nd,nd->n", centred @ self.precision_, centred))
        return -np.min(distances, axis=0) / features.shape[1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "classes": self.classes_.astype(str),
            "means": self.means_,
            "precision": self.precision_,
        }

    @classmethod
    def from_arrays(cls, arrays) -> FeatureDensity:
        density = cls()
        density.classes_ = np.asarray(arrays["classes"])
        density.means_ = np.asarray(arrays["means"])
        density.precision_ = np.asarray(arrays["precision"])
        return density


def in_distribution_threshold(scores, *, recall: float = RECALL) -> float:
    """The score that keeps ``recall`` of ``scores`` (validation images) at or above it."""
    return float(np.quantile(np.asarray(scores, dtype=float), 1 - recall, method="lower"))


def fpr_at_recall(in_scores, out_scores, *, recall: float = RECALL) -> float:
    """Fraction of OOD scores ``>=`` the threshold that keeps ``recall`` of in-distribution."""
    threshold = in_distribution_threshold(in_scores, recall=recall)
    return float(np.mean(np.asarray(out_scores, dtype=float) >= threshold))


def separation(in_scores, out_scores) -> dict[str, float]:
    """AUROC (in-distribution as positive) and FPR at 95 % in-distribution recall."""
    in_scores, out_scores = np.asarray(in_scores), np.asarray(out_scores)
    y = np.r_[np.ones(len(in_scores)), np.zeros(len(out_scores))]
    return {
        "auroc": float(roc_auc_score(y, np.r_[in_scores, out_scores])),
        "fpr_at_95_recall": fpr_at_recall(in_scores, out_scores),
    }
