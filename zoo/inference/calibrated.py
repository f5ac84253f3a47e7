"""A target's stored calibration (``calibration.json``), fitted on its validation split and
applied wherever its probabilities come out, so that what zoo scores is what it serves.

The calibration holds for outputs made the way it was fitted: the target's own TTA scheme
and prior correction, towards uniform priors. Outputs made otherwise (another ``--tta``,
``--no-prior-correction``, ``--target-priors``) are left uncalibrated, with a note saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.errors import ZooError
from zoo.scoring.calibrators import calibrate, calibrator_from_dict
from zoo.scoring.operating_points import StoredOperatingPoint
from zoo.store.calibration import CALIBRATION_FILE, CalibrationRecord, read_calibration
from zoo.store.names import tta_name


@dataclass(frozen=True)
class Calibration:
    """A loaded ``calibration.json``: its record and the calibrator it describes."""

    record: CalibrationRecord
    file: Path

    @property
    def method(self) -> str:
        return self.record.method

    @property
    def operating_point(self) -> StoredOperatingPoint | None:
        return StoredOperatingPoint.from_dict(self.record.operating_point)

    def parameters(self) -> dict:
        return dict(self.record.parameters)

    def fits(self, tta, prior_correction: bool, shifted: bool) -> str | None:
        """None when outputs made with these settings are the ones it was fitted on; else
        why it does not apply."""
        settings = self.record.settings
        if tta_name(str(tta)) != tta_name(settings["tta"]):
            return f"TTA {tta_name(str(tta))}, not {settings['tta']}"
        if prior_correction != settings["prior_correction"]:
            return "prior correction " + ("on" if prior_correction else "off")
        if shifted:
            return "target priors other than uniform"
        return None

    def transform(self, probabilities):
        """Calibrated probabilities; a DataFrame keeps its index, columns and attrs."""
        calibrator = calibrator_from_dict(
            self.record.method, self.record.parameters, len(self.record.classes)
        )
        values = calibrate(calibrator, np.asarray(probabilities, dtype=float))
        if isinstance(probabilities, pd.DataFrame):
            frame = pd.DataFrame(values, index=probabilities.index, columns=probabilities.columns)
            frame.attrs = dict(probabilities.attrs)
            return frame
        return values


def load_calibration(target) -> Calibration | None:
    """The target's stored calibration, checked against its classes; None where it has none."""
    folder = Path(target.path)
    record = read_calibration(folder)
    if record is None:
        return None
    classes = [str(c) for c in target.classes]
    if record.classes != classes:
        raise ZooError(
            f"{folder / CALIBRATION_FILE}: its classes {record.classes} are not the target's "
            f"{classes}; run zoo calibrate {target.name} to fit it again."
        )
    return Calibration(record=record, file=folder / CALIBRATION_FILE)


def served_operating_point(target) -> StoredOperatingPoint | None:
    """The operating point zoo serves for ``target``: the one of its ``calibration.json``
    (chosen on the calibrated validation outputs), else the one stored with it when it was
    built (an ensemble's ``--operating-point``, chosen on uncalibrated outputs); None without
    either."""
    stored = load_calibration(target)
    if stored is not None and stored.operating_point is not None:
        return stored.operating_point
    return getattr(target, "operating_point", None)
