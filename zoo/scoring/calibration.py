"""Calibration: temperature scaling and the calibration metrics of ``zoo evaluate``.

Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks") divides the
logits by one scalar ``T`` fitted on validation data by minimising the negative
log-likelihood. zoo's targets give probabilities, so the logits are ``log p``: softmax is
unchanged by a per-image constant, hence ``softmax(log p / T)`` is exactly temperature
scaling of the network's logits. The argmax, and so balanced accuracy, never changes.

Metrics (all with the top-label or one-hot definitions used in the calibration literature):

- ``ece``: expected calibration error over 15 equal-width confidence bins ``(k/15, (k+1)/15]``:
  ``sum_b n_b / n * |accuracy_b - confidence_b|`` with the top-label confidence;
- ``mce``: maximum calibration error, ``max_b |accuracy_b - confidence_b|`` over non-empty bins;
- ``brier``: the multi-class Brier score, ``mean_i sum_k (p_ik - y_ik)^2`` (0 is perfect, 2 worst);
- ``nll``: the mean negative log-likelihood of the true class (``sklearn.metrics.log_loss``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator
from sklearn.metrics import log_loss

from zoo.errors import ZooError

N_BINS = 15
EPSILON = 1e-12  # probabilities are clipped here before taking logs
TEMPERATURE_BOUNDS = (0.05, 20.0)
CALIBRATION_METRICS = ("ece", "mce", "brier", "nll")


def as_logits(probabilities) -> np.ndarray:
    """``log p`` (clipped at ``EPSILON``): logits up to a per-row constant."""
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 2 or not np.isfinite(p).all() or (p < 0).any():
        raise ZooError(
            f"probabilities must be a finite, non-negative (n_images, n_classes) array; "
            f"received shape {p.shape}."
        )
    return np.log(np.clip(p, EPSILON, None))


def _labels(y, n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    y = y.astype(int)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ZooError(f"labels must be class indices in [0, {n_classes}); received {y.max()}.")
    return y


class TemperatureScaling(BaseEstimator):
    """Temperature scaling of class probabilities, fitted by minimum validation NLL.

    ``fit(logits, y)`` learns ``temperature_`` (bounded search over ``bounds``, with
    ``scipy.optimize.minimize_scalar``); ``y`` holds class indices or one-hot rows.
    ``transform(probabilities)`` returns ``softmax(log p / temperature_)`` with the input's
    shape (and index/columns for a DataFrame). ``fit`` takes logits (or ``log p``), use
    :func:`as_logits` for probabilities.
    """

    def __init__(self, *, bounds: tuple[float, float] = TEMPERATURE_BOUNDS):
        self.bounds = bounds

    def fit(self, logits, y) -> TemperatureScaling:
        z = np.asarray(logits, dtype=float)
        if z.ndim != 2 or len(z) == 0 or not np.isfinite(z).all():
            raise ZooError(
                f"logits must be a finite (n_images, n_classes) array with at least one row; "
                f"received shape {z.shape}."
            )
        labels = _labels(y, z.shape[1])
        if len(labels) != len(z):
            raise ZooError(f"got {len(labels)} labels for {len(z)} rows of logits.")
        low, high = self.bounds
        if not 0 < low < high:
            raise ZooError(f"bounds must be 0 < low < high; received {self.bounds!r}.")
        rows = np.arange(len(z))

        def nll(log_t: float) -> float:
            return float(-log_softmax(z / np.exp(log_t), axis=1)[rows, labels].mean())

        result = minimize_scalar(nll, bounds=(np.log(low), np.log(high)), method="bounded")
        self.temperature_ = float(np.exp(result.x))
        self.nll_before_ = nll(0.0)
        self.nll_after_ = float(result.fun)
        return self

    def transform_logits(self, logits) -> np.ndarray:
        if not hasattr(self, "temperature_"):
            raise ZooError("TemperatureScaling is not fitted; call fit(logits, y) first.")
        return softmax(np.asarray(logits, dtype=float) / self.temperature_, axis=1)

    def transform(self, probabilities):
        """Calibrated probabilities, same shape (and index/columns) as the input."""
        out = self.transform_logits(as_logits(probabilities))
        if isinstance(probabilities, pd.DataFrame):
            frame = pd.DataFrame(out, index=probabilities.index, columns=probabilities.columns)
            frame.attrs = dict(probabilities.attrs)
            return frame
        return out


# --- metrics --------------------------------------------------------------------------------


def bin_index(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each confidence in ``(k/n, (k+1)/n]`` (a confidence of 0 goes to bin 0)."""
    return np.clip(np.ceil(np.asarray(confidence) * n_bins).astype(int) - 1, 0, n_bins - 1)


def calibration_parts(probabilities, y) -> dict[str, np.ndarray]:
    """Per image: top-label ``confidence``, ``correct`` (0/1), ``bin``, ``brier`` and ``nll``."""
    p = np.asarray(probabilities, dtype=float)
    labels = _labels(y, p.shape[1])
    rows = np.arange(len(p))
    onehot = np.zeros_like(p)
    onehot[rows, labels] = 1.0
    confidence = p.max(axis=1)
    return {
        "confidence": confidence,
        "correct": (p.argmax(axis=1) == labels).astype(float),
        "bin": bin_index(confidence),
        "brier": ((p - onehot) ** 2).sum(axis=1),
        "nll": -np.log(np.clip(p[rows, labels] / p.sum(axis=1), EPSILON, None)),
    }


def weighted_calibration(parts: dict[str, np.ndarray], counts: np.ndarray) -> dict[str, np.ndarray]:
    """ECE, MCE, Brier and NLL for each row of image ``counts`` (``(b, n)``; 1s = the sample)."""
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    member = np.eye(N_BINS)[parts["bin"]]  # (n, bins)
    n_bin = counts @ member
    gap = counts @ (member * (parts["correct"] - parts["confidence"])[:, None])
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_bin = np.where(n_bin > 0, np.abs(gap) / n_bin, np.nan)
        return {
            "ece": np.abs(gap).sum(axis=1) / total,
            "mce": np.nanmax(np.where(n_bin > 0, per_bin, -np.inf), axis=1),
            "brier": counts @ parts["brier"] / total,
            "nll": counts @ parts["nll"] / total,
        }


def calibration_metrics(probabilities, y) -> dict[str, float]:
    """``ece``, ``mce``, ``brier`` and ``nll`` of class probabilities against labels ``y``."""
    p = np.asarray(probabilities, dtype=float)
    parts = calibration_parts(p, y)
    values = {k: float(v[0]) for k, v in weighted_calibration(parts, np.ones(len(p))).items()}
    labels = _labels(y, p.shape[1])
    total = p.sum(axis=1, keepdims=True)  # stored probabilities may miss 1 in the 8th digit
    values["nll"] = float(log_loss(labels, p / total, labels=np.arange(p.shape[1])))
    return values


def reliability_table(probabilities, y) -> pd.DataFrame:
    """Per bin: ``low, high, n, confidence, accuracy`` (means; NaN in empty bins)."""
    parts = calibration_parts(probabilities, y)
    frame = pd.DataFrame({k: parts[k] for k in ("bin", "confidence", "correct")})
    grouped = frame.groupby("bin").agg(
        n=("confidence", "size"), confidence=("confidence", "mean"), accuracy=("correct", "mean")
    )
    grouped = grouped.reindex(range(N_BINS))
    grouped["n"] = grouped["n"].fillna(0).astype(int)
    edges = np.linspace(0, 1, N_BINS + 1)
    grouped.insert(0, "high", edges[1:])
    grouped.insert(0, "low", edges[:-1])
    return grouped.reset_index(drop=True)
