"""Post-hoc calibrators of class probabilities, and the choice between them on validation.

Three methods, each a function of ``z = log p`` (zoo's targets give probabilities; softmax is
unchanged by a per-image constant, so ``log p`` stands for the logits):

- ``none``: the probabilities as they are;
- ``temperature`` (Guo et al. 2017): ``softmax(z / T)``, one scalar (:class:`TemperatureScaling`);
- ``vector`` (vector scaling, Guo et al. 2017): ``softmax(w * z + b)``, a scale and a bias per
  class, bounded and pulled towards ``w = 1, b = 0`` by a small L2 penalty, so that a few
  validation images cannot send them to extremes.

:func:`choose_calibrator` picks the method with the lowest held-out negative log-likelihood
in lesion-grouped cross-validation on the validation split (scikit-learn's
``StratifiedGroupKFold``), then fits it on the whole split. It falls back to ``none``, and
says why, where the split is too small to fit anything honestly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax
from sklearn.model_selection import StratifiedGroupKFold

from zoo.errors import ZooError
from zoo.scoring.calibration import TEMPERATURE_BOUNDS, TemperatureScaling, as_logits

METHODS = ("none", "temperature", "vector")
SCALE_BOUNDS = TEMPERATURE_BOUNDS  # a class's scale w lies in [1/20, 1/0.05]
BIAS_BOUND = 10.0
L2 = 1e-2  # pull towards the identity, per image of the fit
MIN_IMAGES = 30  # below this, no calibration at all
MIN_PER_CLASS = 5  # vector scaling needs this many validation images of every class
FOLDS = 5


class Identity:
    """``none``: the probabilities unchanged (renormalised)."""

    method = "none"

    def fit(self, logits, y) -> Identity:
        return self

    def transform_logits(self, logits) -> np.ndarray:
        return softmax(np.asarray(logits, dtype=float), axis=1)

    def parameters(self) -> dict:
        return {}


class Temperature(TemperatureScaling):
    """``temperature``: :class:`TemperatureScaling` with the calibrator interface."""

    method = "temperature"

    def parameters(self) -> dict:
        return {"temperature": float(self.temperature_)}


class VectorScaling:
    """``vector``: ``softmax(w * log p + b)``, ``w`` and ``b`` per class, fitted by bounded
    L-BFGS on the validation NLL plus ``l2 * (|w - 1|² + |b|²)``."""

    method = "vector"

    def __init__(self, *, l2: float = L2):
        self.l2 = l2

    def fit(self, logits, y) -> VectorScaling:
        z = np.asarray(logits, dtype=float)
        labels = np.asarray(y, dtype=int)
        k, rows = z.shape[1], np.arange(len(z))

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:k], theta[k:]
            log_p = log_softmax(z * w + b, axis=1)
            grad_logits = np.exp(log_p)
            grad_logits[rows, labels] -= 1.0
            grad_logits /= len(z)
            loss = -log_p[rows, labels].mean() + self.l2 * (((w - 1) ** 2).sum() + (b**2).sum())
            grad_w = (grad_logits * z).sum(axis=0) + 2 * self.l2 * (w - 1)
            grad_b = grad_logits.sum(axis=0) + 2 * self.l2 * b
            return float(loss), np.concatenate([grad_w, grad_b])

        low, high = 1 / SCALE_BOUNDS[1], 1 / SCALE_BOUNDS[0]
        bounds = [(low, high)] * k + [(-BIAS_BOUND, BIAS_BOUND)] * k
        start = np.concatenate([np.ones(k), np.zeros(k)])
        result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds)
        self.scale_, self.bias_ = result.x[:k], result.x[k:]
        return self

    def transform_logits(self, logits) -> np.ndarray:
        return softmax(np.asarray(logits, dtype=float) * self.scale_ + self.bias_, axis=1)

    def parameters(self) -> dict:
        return {"scale": [float(v) for v in self.scale_], "bias": [float(v) for v in self.bias_]}


_CLASSES = {"none": Identity, "temperature": Temperature, "vector": VectorScaling}


def calibrate(calibrator, probabilities) -> np.ndarray:
    """Calibrated probabilities of a ``(n, classes)`` array."""
    return calibrator.transform_logits(as_logits(probabilities))


def calibrator_from_dict(method: str, parameters: dict[str, Any], n_classes: int):
    """A fitted calibrator from its record; a wrong method or parameter is a ``ValueError``."""
    if method == "none":
        return Identity()
    if method == "temperature":
        t = parameters.get("temperature")
        if not _finite_number(t) or not SCALE_BOUNDS[0] <= t <= SCALE_BOUNDS[1]:
            raise ValueError(f"temperature must be a number in {list(SCALE_BOUNDS)}; got {t!r}")
        out = Temperature()
        out.temperature_ = float(t)
        return out
    if method == "vector":
        scale, bias = parameters.get("scale"), parameters.get("bias")
        for name, values in (("scale", scale), ("bias", bias)):
            if not isinstance(values, list) or len(values) != n_classes:
                raise ValueError(f"{name} must be a list of {n_classes} numbers; got {values!r}")
            if not all(_finite_number(v) for v in values):
                raise ValueError(f"{name} must hold finite numbers; got {values!r}")
        out = VectorScaling()
        out.scale_, out.bias_ = np.asarray(scale, dtype=float), np.asarray(bias, dtype=float)
        return out
    raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")


def _finite_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _nll(calibrator, z: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(calibrator.transform_logits(z)[np.arange(len(z)), y], 1e-12, None)
    return float(-np.log(p).mean())


def _candidates(y: np.ndarray, n_classes: int) -> tuple[list[str], str | None]:
    """The methods the validation split can support, and why one was left out."""
    counts = np.bincount(y, minlength=n_classes)
    if counts.min() < MIN_PER_CLASS:
        fewest = int(counts.argmin())
        why = f"vector scaling left out: class {fewest} has {counts.min()} validation images"
        return ["none", "temperature"], why
    return list(METHODS), None


def cross_validated_nll(z, y, groups, methods, *, folds: int = FOLDS, seed: int = 0) -> dict:
    """Held-out NLL of each method, lesion-grouped ``folds``-fold on the validation split."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    totals = {m: 0.0 for m in methods}
    for fit_rows, held_rows in splitter.split(z, y, groups):
        for m in methods:
            model = _CLASSES[m]().fit(z[fit_rows], y[fit_rows])
            totals[m] += _nll(model, z[held_rows], y[held_rows]) * len(held_rows)
    return {m: totals[m] / len(z) for m in methods}


def choose_calibrator(probabilities, y, groups=None) -> tuple[Any, dict]:
    """The calibrator with the lowest cross-validated NLL, fitted on all of ``probabilities``
    (the validation split), and the record of the choice: method, parameters, images,
    held-out NLL of every method, NLL before and after, and a note where it fell back."""
    z = as_logits(probabilities)
    y = np.asarray(y, dtype=int)
    if len(y) != len(z):
        raise ZooError(f"got {len(y)} labels for {len(z)} rows of probabilities.")
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    fit = {"images": len(y), "lesions": len(set(groups.tolist()))}
    if len(y) < MIN_IMAGES or fit["lesions"] < FOLDS * 2:
        chosen = Identity()
        note = f"no calibration: {len(y)} validation images are too few to fit one"
        return chosen, {**fit, "method": "none", "parameters": {}, "cv_nll": None, "note": note}
    methods, note = _candidates(y, z.shape[1])
    folds = min(FOLDS, int(np.bincount(y).max()))
    cv = cross_validated_nll(z, y, groups, methods, folds=folds)
    best = min(methods, key=lambda m: cv[m])
    chosen = _CLASSES[best]().fit(z, y)
    record = {
        **fit,
        "method": best,
        "parameters": chosen.parameters(),
        "cv_nll": cv,
        "nll_before": _nll(Identity(), z, y),
        "nll_after": _nll(chosen, z, y),
        "note": note,
    }
    return chosen, record


def fit_served_outputs(probabilities, labels, groups, classes) -> dict:
    """What a target fits on its validation split for the outputs it serves: the calibrator
    (:func:`choose_calibrator`) and, on the calibrated outputs, the melanoma operating point
    (:func:`zoo.scoring.operating_points.served_operating_point`). The entries of
    ``calibration.json`` besides ``classes`` and ``settings``."""
    import pandas as pd

    from zoo.scoring.operating_points import served_operating_point

    probabilities = np.asarray(probabilities, dtype=float)
    calibrator, fit = choose_calibrator(probabilities, labels, groups)
    calibrated = calibrate(calibrator, probabilities)
    series = None if groups is None else pd.Series(np.asarray(groups), index=range(len(labels)))
    try:
        point = served_operating_point(
            classes=classes, labels=labels, probabilities=calibrated, groups=series
        )
    except ZooError:  # too few melanomas to resample
        point = None
    method, parameters = fit.pop("method"), fit.pop("parameters")
    return {
        "method": method,
        "parameters": parameters,
        "fit": fit,
        "operating_point": None if point is None else point.to_dict(),
    }


def write_served_outputs(
    folder, *, classes, tta, prior_correction: bool, probabilities, labels, groups
):
    """Fit the served outputs (:func:`fit_served_outputs`) on validation ``probabilities``
    made with ``tta`` and ``prior_correction``, ``labels`` (class indices) and lesion
    ``groups``, and write them as ``calibration.json`` in ``folder``; returns the record."""
    from pathlib import Path

    from zoo.store.calibration import CALIBRATION_FILE, CalibrationRecord
    from zoo.store.names import tta_name

    names = [str(c) for c in classes]
    record = CalibrationRecord(
        classes=names,
        settings={"tta": tta_name(str(tta)), "prior_correction": bool(prior_correction)},
        **fit_served_outputs(probabilities, labels, groups, names),
    )
    record.check()
    record.write(Path(folder) / CALIBRATION_FILE)
    return record
