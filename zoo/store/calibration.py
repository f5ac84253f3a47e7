"""``calibration.json``: how a member's or ensemble's outputs are turned into what zoo serves.

Written beside ``member.json`` / ``ensemble.json`` when a member is saved, when an ensemble
is built, and by ``zoo calibrate``; read by every surface that gives probabilities
(``zoo evaluate``, ``zoo predict``, the Python API, ``zoo serve``, ``zoo export``). It holds
the calibrator chosen on the target's validation split (``method``: ``none``,
``temperature`` or ``vector``, and its ``parameters``), the settings it was fitted under
(``settings``: TTA scheme and prior correction; it applies only to outputs made the same
way), the figures of the fit, and the melanoma operating point chosen on the calibrated
validation outputs. It is not part of the member's hashed files, so calibrating a member
again does not invalidate the ensembles built from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from zoo.store.records import Record

CALIBRATION_FILE = "calibration.json"
METHODS = ("none", "temperature", "vector")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(kw_only=True)
class CalibrationRecord(Record):
    """``calibration.json``."""

    REMEDY: ClassVar[str] = "run zoo calibrate TARGET to fit it again."

    classes: list
    settings: dict
    method: str
    parameters: dict
    fit: dict
    operating_point: dict | None = None

    def check(self) -> None:
        if not self.classes or not all(isinstance(c, str) and c for c in self.classes):
            raise ValueError(f"'classes' must be a non-empty list of names; got {self.classes!r}")
        if not isinstance(self.settings.get("tta"), str):
            raise ValueError(f"'settings.tta' must be a TTA name; got {self.settings.get('tta')!r}")
        if not isinstance(self.settings.get("prior_correction"), bool):
            raise ValueError("'settings.prior_correction' must be true or false")
        if self.method not in METHODS:
            raise ValueError(f"'method' must be one of {', '.join(METHODS)}; got {self.method!r}")
        self._check_parameters()
        if self.operating_point is not None:
            self._check_point(self.operating_point)

    def _check_parameters(self) -> None:
        k = len(self.classes)
        if self.method == "temperature" and not (
            _finite(self.parameters.get("temperature")) and self.parameters["temperature"] > 0
        ):
            raise ValueError(f"'parameters.temperature' must be > 0; got {self.parameters!r}")
        if self.method == "vector":
            for name in ("scale", "bias"):
                values = self.parameters.get(name)
                if not (
                    isinstance(values, list) and len(values) == k and all(map(_finite, values))
                ):
                    raise ValueError(
                        f"'parameters.{name}' must be {k} finite numbers, one per class; got "
                        f"{values!r}"
                    )

    def _check_point(self, point: dict) -> None:
        if point.get("class") not in self.classes:
            raise ValueError(f"'operating_point.class' must be one of the classes; got {point!r}")
        threshold = point.get("threshold")
        if not (_finite(threshold) and 0 <= threshold <= 1):
            raise ValueError(f"'operating_point.threshold' must be in [0, 1]; got {threshold!r}")


def read_calibration(folder: str | Path) -> CalibrationRecord | None:
    """The target's ``calibration.json``, or None where it has none (a damaged one is a
    one-line error naming it)."""
    file = Path(folder) / CALIBRATION_FILE
    return CalibrationRecord.load(file) if file.exists() else None
