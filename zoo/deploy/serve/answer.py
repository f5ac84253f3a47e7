"""One prediction as ``POST /predict`` answers it: probabilities, top class, OOD, the flag.

The flag says whether the melanoma probability reaches the target's operating point
(``target.operating_point``: class, criterion, value and threshold, chosen on validation —
the one stored with an ensemble, else the one of the target's ``calibration.json``). Without
one, the threshold is 0.5 and the answer says so. The threshold is compared with the
probabilities ``zoo predict`` gives (the target's TTA, prior correction and stored
calibration), the ones it was chosen on. Melanoma as the top class is always flagged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

DISCLAIMER = "Research software, not a diagnostic device."
FLAG_CLASS = "mel"
DEFAULT_THRESHOLD = 0.5


def operating_point(target) -> dict | None:
    """``target.operating_point`` (a mapping, a dataclass or an object) as a plain dict with
    ``class``, ``criterion``, ``value``, ``threshold``; ``None`` when the target has none."""
    point = getattr(target, "operating_point", None)
    if point is None:
        return None
    if dataclasses.is_dataclass(point):
        point = dataclasses.asdict(point)
    elif not isinstance(point, Mapping):
        point = vars(point)

    def first(*keys):
        return next((point[k] for k in keys if point.get(k) is not None), None)

    threshold = first("threshold", "threshold_")
    if threshold is None:
        return None
    value = first("value", "target")
    return {
        "class": str(first("class", "class_name", "cls", "label") or FLAG_CLASS),
        "criterion": first("criterion", "metric"),
        "value": None if value is None else float(value),
        "threshold": float(threshold),
        "at_least": bool(point.get("at_least", False)),
        "val_sensitivity": first("val_sensitivity"),
        "val_specificity": first("val_specificity"),
    }


def _class_key(classes: list[str], wanted: str) -> str | None:
    return next((c for c in classes if c.lower() == wanted.lower()), None)


def flag(probabilities: Mapping[str, float], point: dict | None) -> dict:
    """Whether the flagged class (melanoma) reaches its threshold (``>=``, as evaluation
    counts an image positive); the threshold of ``point`` else 0.5, with where it came from."""
    from zoo.scoring.taxonomy import class_name

    classes = [str(c) for c in probabilities]
    wanted = point["class"] if point else FLAG_CLASS
    threshold = point["threshold"] if point else DEFAULT_THRESHOLD
    key = _class_key(classes, wanted)
    if point:
        source = _point_source(point)
    else:
        source = "default threshold 0.5 (the target has no operating point)"
    record = {
        "class": key or wanted,
        "name": class_name(key or wanted),
        "probability": None if key is None else float(probabilities[key]),
        "threshold": float(threshold),
        "flagged": None,
        "source": source,
        "operating_point": point,
    }
    if key is not None:
        top = max(probabilities, key=probabilities.__getitem__)
        record["flagged"] = bool(record["probability"] >= threshold or top == key)
        if top == key and record["probability"] < threshold:
            record["source"] += f"; flagged because {key} is the top class"
    return record


def _point_source(point: dict) -> str:
    """``operating point: sensitivity >= 0.90 in 95 % of validation resamples (validation
    sensitivity 0.92, specificity 0.64)``."""
    criterion = point.get("criterion") or "operating point"
    value = f" {point['value']:.2f}" if point.get("value") is not None else ""
    text = f"operating point: {criterion}{' >=' if point.get('at_least') else ''}{value}"
    text += " in 95 % of validation resamples" if point.get("at_least") else " on validation"
    reached = [
        f"{name} {point[key]:.2f}"
        for name, key in (("sensitivity", "val_sensitivity"), ("specificity", "val_specificity"))
        if point.get(key) is not None
    ]
    return text + (f" (validation {', '.join(reached)})" if reached else "")


def prediction_answer(row: Mapping, *, target, classes: list[str], image: str) -> dict:
    """The JSON answer for one predicted row (class columns, then the ``ood_*`` columns)."""
    from zoo.scoring.taxonomy import class_name

    probabilities = {str(c): float(row[c]) for c in classes}
    top = max(probabilities, key=probabilities.__getitem__)
    ood = None
    if "ood_msp" in row and "ood_energy" in row:
        ood = {
            "msp": _finite(row["ood_msp"]),
            "energy": _finite(row["ood_energy"]),
            "mahalanobis": None,
            "flagged": None,
            "note": "higher means more like the training images",
        }
        if "ood_mahalanobis" in row:
            ood["mahalanobis"] = _finite(row["ood_mahalanobis"])
            ood["flagged"] = bool(row["ood_flag"])
            ood["note"] += (
                "; flagged: the image's features lie farther from the training images' than "
                "those of 95 % of the validation images"
            )
    return {
        "image": image,
        "target": {"name": target.name, "kind": target.kind},
        "probabilities": probabilities,
        "classes": [
            {"class": c, "name": class_name(c), "probability": p} for c, p in probabilities.items()
        ],
        "top_class": {"class": top, "name": class_name(top), "probability": probabilities[top]},
        "ood": ood,
        "flag": flag(probabilities, operating_point(target)),
        "settings": {
            "tta": str(target.default_tta),
            "prior_correction": bool(target.default_prior_correction),
        },
        "disclaimer": DISCLAIMER,
    }


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
