"""Operating points chosen on validation: ``--operating-point CLASS:sensitivity=0.90``.

A clinician asks "how specific is it at 90 % sensitivity for melanoma?". The threshold that
reaches the sensitivity (or specificity) must be chosen on validation data and then applied
unchanged to the evaluated data; choosing it on the test data would flatter the model.
An image is called positive for the class when its probability is ``>= threshold_``.

``CLASS:sensitivity=0.90`` takes the threshold at which validation reaches 0.90 exactly, so on
new images the sensitivity falls below 0.90 about half the time, and further where the
validation images were easier. ``CLASS:sensitivity>=0.90`` asks for at least 0.90: the
highest threshold that reaches 0.90 in 95 % of bootstrap resamples of the validation images,
resampled by lesion (:func:`guaranteed_threshold`), as one chooses a screening threshold whose
lower confidence bound meets the minimum sensitivity.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import roc_curve

from zoo.errors import ZooError
from zoo.scoring.metrics import bootstrap_statistics, group_codes, resample_counts

METRICS = ("sensitivity", "specificity")
DEFAULT_POINTS = ("mel:sensitivity=0.90", "mel:sensitivity=0.95", "mel:sensitivity>=0.90")
CONFIDENCE = 0.95  # of the ">=" points: the share of validation resamples that reach the value
N_RESAMPLES = 1000  # validation resamples behind a ">=" point
SEED = 0


@dataclasses.dataclass(frozen=True)
class OperatingPointSpec:
    """One ``CLASS:METRIC=VALUE`` (or ``CLASS:METRIC>=VALUE``, at least) request."""

    cls: str
    metric: str
    value: float
    at_least: bool = False

    @property
    def text(self) -> str:
        return f"{self.cls}:{self.metric}{'>=' if self.at_least else '='}{self.value:g}"


def parse_operating_point(text: str, classes=None) -> OperatingPointSpec:
    """``mel:sensitivity=0.90`` → :class:`OperatingPointSpec`; one-line errors otherwise."""
    where = f"--operating-point {text!r}"
    cls, sep, rest = str(text).partition(":")
    metric, eq, value = rest.partition("=")
    if not (sep and eq and cls.strip()):
        raise ZooError(
            f"{where}: expected CLASS:sensitivity=V or CLASS:specificity=V (>= for at least V), "
            "e.g. mel:sensitivity=0.90."
        )
    at_least = metric.rstrip().endswith(">")
    metric = metric.strip().removesuffix(">").strip().lower()
    if metric not in METRICS:
        raise ZooError(f"{where}: unknown metric {metric!r}; choose sensitivity or specificity.")
    try:
        number = float(value)
    except ValueError:
        raise ZooError(f"{where}: {value!r} is not a number between 0 and 1.") from None
    if not 0 < number <= 1:
        raise ZooError(f"{where}: the {metric} must be in (0, 1]; got {number:g}.")
    cls = cls.strip()
    if classes is not None and cls not in [str(c) for c in classes]:
        raise ZooError(
            f"{where}: {cls!r} is not a class of the target; choose one of {', '.join(map(str, classes))}."
        )
    return OperatingPointSpec(cls=cls, metric=metric, value=number, at_least=at_least)


def _reaching(y, score, *, metric: str, value: float, weights=None) -> float:
    """For ``sensitivity`` the highest threshold whose sensitivity is ``>= value``; for
    ``specificity`` the lowest whose specificity is; images weighted by ``weights`` (the
    draw counts of a bootstrap resample) where given."""
    fpr, tpr, thresholds = roc_curve(y, score, sample_weight=weights, drop_intermediate=False)
    if metric == "sensitivity":
        i = int(np.flatnonzero(tpr >= value - 1e-12)[0])
    else:
        i = int(np.flatnonzero(1 - fpr >= value - 1e-12)[-1])
    threshold = thresholds[i]
    if not np.isfinite(threshold):  # nothing called positive: just above every score
        threshold = np.nextafter(np.max(score), np.inf)
    return float(threshold)


def guaranteed_threshold(
    y,
    score,
    *,
    metric: str,
    value: float,
    groups: pd.Series | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> float:
    """The highest threshold (for ``specificity``: the lowest) at which ``metric`` reaches
    ``value`` in ``confidence`` of the lesion bootstrap resamples of ``(y, score)``
    (:func:`zoo.scoring.metrics.resample_counts`; ``groups``: the lesion of each image, in the same
    order, or ``None`` to resample images).

    Sensitivity falls as the threshold rises, so it reaches ``value`` in a resample exactly
    where the threshold is at most that resample's own threshold: the answer is the lower
    ``1 - confidence`` quantile of those thresholds (the upper ``confidence`` quantile for
    specificity, which rises with the threshold)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=float)
    index = pd.RangeIndex(len(y)) if groups is None else groups.index
    group_of = group_codes(index, groups)
    rng = np.random.default_rng(seed)
    thresholds = [
        _reaching(y, s, metric=metric, value=value, weights=w)
        for _, counts in resample_counts(group_of, n_resamples=n_resamples, rng=rng)
        for w in counts
        if w @ y > 0 and w @ ~y > 0  # the resample has positives and negatives
    ]
    if not thresholds:
        raise ZooError("the validation data needs positive and negative images of the class.")
    if metric == "sensitivity":
        return float(np.quantile(thresholds, 1 - confidence, method="lower"))
    return float(np.quantile(thresholds, confidence, method="higher"))


class ThresholdSelector(BaseEstimator):
    """Pick the threshold that reaches ``value`` of ``metric`` on the data given to ``fit``.

    For ``sensitivity`` the highest threshold whose sensitivity is ``>= value`` (the most
    specific such point); for ``specificity`` the lowest threshold whose specificity is
    ``>= value``. With ``confidence`` (an at-least point), the threshold that does so in that
    share of the lesion bootstrap resamples (:func:`guaranteed_threshold`, resampling the
    ``groups`` given to ``fit``). ``fit(y, score, groups=None)`` learns ``threshold_`` and the
    achieved ``sensitivity_``/``specificity_`` on that data.
    """

    def __init__(self, *, metric: str = "sensitivity", value: float = 0.9, confidence=None):
        self.metric = metric
        self.value = value
        self.confidence = confidence

    def fit(self, y, score, groups: pd.Series | None = None) -> ThresholdSelector:
        y = np.asarray(y).astype(bool)
        s = np.asarray(score, dtype=float)
        if self.metric not in METRICS:
            raise ZooError(f"metric must be sensitivity or specificity; received {self.metric!r}.")
        if y.all() or not y.any():
            raise ZooError(
                "the validation data needs positive and negative images of the class to choose "
                "an operating point."
            )
        kw = dict(metric=self.metric, value=self.value)
        if self.confidence is None:
            self.threshold_ = _reaching(y, s, **kw)
        else:
            self.threshold_ = guaranteed_threshold(
                y, s, groups=groups, confidence=self.confidence, **kw
            )
        called = self.predict(s)
        self.sensitivity_ = float(called[y].mean())
        self.specificity_ = float((~called[~y]).mean())
        return self

    def predict(self, score) -> np.ndarray:
        return np.asarray(score, dtype=float) >= self.threshold_


def achieved(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    *,
    index: pd.Index,
    groups: pd.Series | None,
    n_resamples: int,
    seed: int,
) -> dict:
    """Sensitivity and specificity at ``score >= threshold``, with bootstrap intervals."""
    y = np.asarray(y).astype(bool)
    called = np.asarray(score, dtype=float) >= threshold
    hit_pos, hit_neg = (y & called).astype(float), (~y & ~called).astype(float)

    def rates(counts: np.ndarray) -> dict:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "sensitivity": counts @ hit_pos / (counts @ y.astype(float)),
                "specificity": counts @ hit_neg / (counts @ (~y).astype(float)),
            }

    point = {k: float(v[0]) for k, v in rates(np.ones((1, len(y)))).items()}
    point = {k: (None if np.isnan(v) else v) for k, v in point.items()}
    intervals = (
        bootstrap_statistics(index, rates, groups=groups, n_resamples=n_resamples, seed=seed)
        if n_resamples
        else {"sensitivity": None, "specificity": None}
    )
    return {
        **point,
        "sensitivity_ci95": intervals["sensitivity"],
        "specificity_ci95": intervals["specificity"],
        "n_positive": int(y.sum()),
        "n_negative": int((~y).sum()),
    }


def operating_point_block(
    spec: OperatingPointSpec,
    *,
    val_truth: pd.DataFrame,
    val_probs: pd.DataFrame,
    truth: pd.DataFrame,
    probs: pd.DataFrame,
    groups: pd.Series | None,
    n_resamples: int,
    seed: int,
    val_groups: pd.Series | None = None,
) -> dict:
    """The threshold chosen on validation (resampled by ``val_groups`` for an at-least spec)
    and what it achieves on the evaluated data."""
    selector = ThresholdSelector(
        metric=spec.metric, value=spec.value, confidence=CONFIDENCE if spec.at_least else None
    ).fit(val_truth[spec.cls].to_numpy() > 0.5, val_probs[spec.cls].to_numpy(), groups=val_groups)
    result = achieved(
        truth[spec.cls].to_numpy() > 0.5,
        probs[spec.cls].to_numpy(),
        selector.threshold_,
        index=truth.index,
        groups=groups,
        n_resamples=n_resamples,
        seed=seed,
    )
    return {
        "spec": spec.text,
        "class": spec.cls,
        "metric": spec.metric,
        "target": spec.value,
        "at_least": spec.at_least,
        "threshold": selector.threshold_,
        "chosen_on": "val",
        "val": {"sensitivity": selector.sensitivity_, "specificity": selector.specificity_},
        **result,
    }


@dataclasses.dataclass(frozen=True)
class StoredOperatingPoint:
    """An operating point stored with a target (``ensemble.json``'s ``operating_point``):
    images whose ``class_name`` probability is ``>= threshold`` are flagged; the threshold
    reached ``criterion = value`` on the validation split."""

    class_name: str
    criterion: str
    value: float
    threshold: float
    val_sensitivity: float | None = None
    val_specificity: float | None = None
    at_least: bool = False  # reached in 95 % of validation resamples, not just on the split

    @property
    def column(self) -> str:
        """The ``zoo predict`` column that flags images at or above the threshold."""
        return f"{self.class_name}_flag"

    def to_dict(self) -> dict:
        return {
            "class": self.class_name,
            "criterion": self.criterion,
            "value": self.value,
            "threshold": self.threshold,
            "at_least": self.at_least,
            "chosen_on": "val",
            "val": {"sensitivity": self.val_sensitivity, "specificity": self.val_specificity},
        }

    @classmethod
    def from_dict(cls, data: dict | None) -> StoredOperatingPoint | None:
        if not data:
            return None
        val = data.get("val") or {}
        return cls(
            class_name=str(data["class"]),
            criterion=str(data["criterion"]),
            value=float(data["value"]),
            threshold=float(data["threshold"]),
            val_sensitivity=val.get("sensitivity"),
            val_specificity=val.get("specificity"),
            at_least=bool(data.get("at_least", False)),
        )


def choose_operating_point(
    text: str, *, classes, labels: np.ndarray, probabilities: np.ndarray
) -> StoredOperatingPoint:
    """The threshold for ``CLASS:sensitivity=X`` (or ``specificity``) on validation
    ``labels`` (class indices) and ``probabilities`` (images × classes)."""
    spec = parse_operating_point(text, classes)
    if spec.at_least:
        raise ZooError(
            f"--operating-point {text!r}: an ensemble stores a point reached on validation "
            f"(CLASS:{spec.metric}={spec.value:g}); the at-least form is for zoo evaluate."
        )
    k = [str(c) for c in classes].index(spec.cls)
    selector = ThresholdSelector(metric=spec.metric, value=spec.value).fit(
        np.asarray(labels) == k, np.asarray(probabilities)[:, k]
    )
    return StoredOperatingPoint(
        class_name=spec.cls,
        criterion=spec.metric,
        value=spec.value,
        threshold=selector.threshold_,
        val_sensitivity=selector.sensitivity_,
        val_specificity=selector.specificity_,
    )


SERVED_POINT = "mel:sensitivity>=0.90"  # the melanoma flag every target serves by default


def served_operating_point(
    *, classes, labels: np.ndarray, probabilities: np.ndarray, groups: pd.Series | None
) -> StoredOperatingPoint | None:
    """The at-least point of :data:`SERVED_POINT` on validation ``labels`` (class indices) and
    ``probabilities``: the highest threshold that reaches 90 % melanoma sensitivity in 95 %
    of lesion-grouped validation resamples, with the sensitivity and specificity it reaches
    there; None where the classes have no melanoma or the validation split none of it."""
    spec = parse_operating_point(SERVED_POINT)
    names = [str(c) for c in classes]
    if spec.cls not in names:
        return None
    y = np.asarray(labels) == names.index(spec.cls)
    if not y.any() or y.all():
        return None
    score = np.asarray(probabilities, dtype=float)[:, names.index(spec.cls)]
    threshold = guaranteed_threshold(y, score, metric=spec.metric, value=spec.value, groups=groups)
    called = score >= threshold
    return StoredOperatingPoint(
        class_name=spec.cls,
        criterion=spec.metric,
        value=spec.value,
        threshold=threshold,
        val_sensitivity=float((called & y).sum() / y.sum()),
        val_specificity=float((~called & ~y).sum() / (~y).sum()),
        at_least=True,
    )
