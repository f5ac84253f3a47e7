"""Prior correction of softmax outputs (Steppan & Hanke 2021, "Analysis of skin lesion images
with deep learning").

A network trained under class priors ``pi_train`` estimates ``p(c | x)`` proportional to
``p(x | c) * pi_train[c]``. Dividing by ``pi_train`` and renormalising gives the posterior
under uniform priors; multiplying by ``target_priors`` instead gives the posterior under those.
With class-weighted loss or balanced sampling the network has effectively seen
``effective_priors(...)``, not the raw class frequencies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from zoo.errors import ZooError, close_matches

ArrayLike = np.ndarray | pd.Series | list | tuple


def _vector(values: object, *, name: str, allow_zero: bool = False) -> np.ndarray:
    try:
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ZooError(
            f"{name} must be a list of numbers, one per class; received {values!r}."
        ) from None
    if v.ndim != 1 or v.size == 0:
        raise ZooError(
            f"{name} must be a flat list of numbers, one per class; received {values!r}."
        )
    low = (v < 0) if allow_zero else (v <= 0)
    if not np.isfinite(v).all() or low.any() or v.sum() <= 0:
        need = "finite, >= 0 and not all 0" if allow_zero else "finite and > 0"
        raise ZooError(f"{name} must be {need}; received {v.tolist()}.")
    return v


class PriorCorrection(BaseEstimator):
    """Re-weight class probabilities from the training priors to ``target_priors``.

    ``target_priors=None`` means uniform (the balanced setting ISIC scores reward); target
    priors may be 0 for a class (never predict it) but not all 0.
    ``fit(priors)`` takes the per-class training priors (normalised here) and sets
    ``priors_``; a ``pd.Series`` also sets ``classes_`` and then ``transform`` matches
    DataFrame columns to it by name. ``transform(probabilities)`` returns rows proportional to
    ``probabilities / priors_ * target_priors``, summing to 1, as a DataFrame with the same
    index and columns when given one.
    """

    def __init__(self, target_priors: ArrayLike | None = None):
        self.target_priors = target_priors

    def fit(self, priors: ArrayLike) -> PriorCorrection:
        """Learn ``priors_`` (normalised training priors) and ``target_`` (normalised target)."""
        v = _vector(priors, name="priors")
        self.priors_ = v / v.sum()
        self.classes_ = [str(c) for c in priors.index] if isinstance(priors, pd.Series) else None
        if self.target_priors is None:
            self.target_ = np.full(v.size, 1.0 / v.size)
        else:
            target = _vector(self.target_priors, name="target_priors", allow_zero=True)
            if target.size != v.size:
                raise ZooError(
                    f"target_priors has {target.size} values but priors has {v.size}; give one "
                    "target prior per class."
                )
            if isinstance(self.target_priors, pd.Series) and self.classes_ is not None:
                target = self._by_name(self.target_priors, self.classes_, "target_priors")
            self.target_ = target / target.sum()
        return self

    @staticmethod
    def _by_name(series: pd.Series, classes: list[str], name: str) -> np.ndarray:
        index = [str(c) for c in series.index]
        if sorted(index) != sorted(classes):
            raise ZooError(
                f"{name} classes {index} differ from the fitted classes {classes}; use the same "
                "class names."
            )
        return series.set_axis(index).loc[classes].to_numpy(dtype=float)

    def transform(self, probabilities: np.ndarray | pd.DataFrame) -> np.ndarray | pd.DataFrame:
        """Prior-corrected probabilities, same shape (and index/columns) as the input."""
        if not hasattr(self, "priors_"):
            raise ZooError("PriorCorrection is not fitted; call fit(priors) before transform.")
        priors, target = self.priors_, self.target_
        frame = probabilities if isinstance(probabilities, pd.DataFrame) else None
        if frame is not None and self.classes_ is not None:
            columns = [str(c) for c in frame.columns]
            if sorted(columns) != sorted(self.classes_):
                raise ZooError(
                    f"probabilities columns {columns} differ from the fitted classes "
                    f"{self.classes_}; correct outputs of the model the priors belong to."
                )
            order = [self.classes_.index(c) for c in columns]
            priors, target = priors[order], target[order]
        try:
            p = np.asarray(probabilities, dtype=float)
        except (TypeError, ValueError):
            raise ZooError(
                f"probabilities must be numbers; received {type(probabilities).__name__}."
            ) from None
        if p.ndim != 2 or p.shape[1] != priors.size:
            raise ZooError(
                f"probabilities must have shape (n_images, {priors.size}); received shape "
                f"{p.shape}."
            )
        if not (np.isfinite(p) & (p >= 0)).all():
            raise ZooError(
                "probabilities must be finite and >= 0; received negative or NaN values."
            )
        scaled = p / priors * target
        total = scaled.sum(axis=1, keepdims=True)
        if (total <= 0).any():
            rows = np.flatnonzero(total[:, 0] <= 0)[:5].tolist()
            raise ZooError(f"probabilities rows {rows} are all zero; nothing to re-weight.")
        out = scaled / total
        if frame is not None:
            return pd.DataFrame(out, index=frame.index, columns=frame.columns)
        return out

    def fit_transform(
        self, probabilities: np.ndarray | pd.DataFrame, priors: ArrayLike
    ) -> np.ndarray | pd.DataFrame:
        """``fit(priors).transform(probabilities)``."""
        return self.fit(priors).transform(probabilities)


def load_target_priors(
    spec: str, classes: list[str], *, option: str = "--target-priors"
) -> tuple[pd.Series, list[str]]:
    """Target priors of ``option``: the word ``uniform`` or a JSON file ``{class: prior}``.

    Every class of ``classes`` needs a finite prior >= 0 (not all 0); names are matched
    exactly. Returns the priors in ``classes`` order, normalised to sum to 1, and notes (one
    when the file's priors did not sum to 1).
    """
    classes = [str(c) for c in classes]
    if str(spec).strip().lower() == "uniform":
        return pd.Series(1.0 / len(classes), index=classes, name="target_prior"), []
    path = Path(spec).expanduser()
    where = f"{option} {spec}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ZooError(
            f"{where}: cannot read it ({exc.strerror or exc}); pass a JSON file "
            '{"class": prior} or the word uniform.'
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ZooError(f'{where}: not valid JSON ({exc}); write {{"class": prior, …}}.') from None
    return checked_target_priors(data, classes, where=where)


def checked_target_priors(
    data: object, classes: list[str], *, where: str = "target_priors"
) -> tuple[pd.Series, list[str]]:
    """``{class: prior}`` checked against ``classes`` (see :func:`load_target_priors`)."""
    classes = [str(c) for c in classes]
    if isinstance(data, pd.Series):
        data = data.to_dict()
    if not isinstance(data, dict) or not data:
        raise ZooError(
            f'{where} must be a JSON object {{"class": prior}} with one entry per class '
            f"({', '.join(classes)}); got {data!r}."
        )
    for name, value in data.items():
        if name not in classes:
            raise ZooError(
                f"{where}: unknown class {name!r}; the model's classes are "
                f"{', '.join(classes)}.{close_matches(str(name), classes)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ZooError(f"{where}: class {name!r} has prior {value!r}; give a number >= 0.")
        if not np.isfinite(value) or value < 0:
            raise ZooError(
                f"{where}: class {name!r} has prior {value!r}; give a finite number >= 0."
            )
    missing = [c for c in classes if c not in data]
    if missing:
        raise ZooError(
            f"{where}: no prior for class(es) {', '.join(missing)}; give one per class "
            "(0 means never predict it)."
        )
    values = pd.Series({c: float(data[c]) for c in classes}, name="target_prior")
    total = float(values.sum())
    if total <= 0:
        raise ZooError(f"{where}: every prior is 0; give at least one class a prior > 0.")
    notes = []
    if abs(total - 1.0) > 1e-9:
        notes.append(f"{where}: target priors summed to {total:g}; normalised to 1")
    return values / total, notes


def effective_priors(
    class_counts: ArrayLike, class_weights: ArrayLike | str | None = None
) -> np.ndarray | pd.Series:
    """The class priors a network effectively trains under, normalised to sum to 1.

    ``class_counts``: training images per class. ``class_weights``: per-class loss weights
    (the prior is then proportional to ``count * weight``), ``"balanced"`` for balanced
    sampling (uniform over classes that have images), or ``None`` (plain frequencies).
    Returns a Series with the same index when ``class_counts`` is a Series.
    """
    counts = _vector(class_counts, name="class_counts", allow_zero=True)
    if class_weights is None:
        mass = counts
    elif isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ZooError(
                f"class_weights must be per-class numbers, 'balanced' or None; received "
                f"{class_weights!r}."
            )
        mass = (counts > 0).astype(float)
    else:
        weights = _vector(class_weights, name="class_weights", allow_zero=True)
        if weights.size != counts.size:
            raise ZooError(
                f"class_weights has {weights.size} values but class_counts has {counts.size}; "
                "give one weight per class."
            )
        mass = counts * weights
        if mass.sum() <= 0:
            raise ZooError(
                f"class_weights {weights.tolist()} give zero weight to every class with images."
            )
    prior = mass / mass.sum()
    if isinstance(class_counts, pd.Series):
        return pd.Series(prior, index=class_counts.index, name="prior")
    return prior
