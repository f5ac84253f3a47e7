"""``zoo calibrate TARGET``: fit a member's or ensemble's served outputs on its validation
split — the calibrator and the melanoma operating point — and store them in its
``calibration.json``, without retraining. ``zoo train`` does this for every new member,
``zoo ensemble build`` for every new ensemble."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo import console
from zoo.data import load_training_data
from zoo.ensembles.targets import Target, resolve_target
from zoo.errors import ZooError
from zoo.evaluation.evaluate import prior_settings
from zoo.evaluation.reliability import validation_outputs
from zoo.scoring.calibrators import write_served_outputs
from zoo.store.calibration import CALIBRATION_FILE, CalibrationRecord


def calibrate_target(target: Target, *, workspace: Path) -> CalibrationRecord:
    """Fit and write ``target``'s ``calibration.json`` for its default outputs (its own TTA
    and prior correction), from its validation split."""
    dataset = load_training_data(
        target.data_info.get("source"),
        workspace=workspace,
        owner=target.name,
        needed_for="zoo calibrate",
    )
    priors = prior_settings(target, prior_correction=None, target_priors=None, calibrated=False)
    priors.notes.clear()
    val, note = validation_outputs(
        target, dataset, split="test", tta=target.default_tta, priors=priors, workspace=workspace
    )
    if val is None:
        raise ZooError(f"zoo calibrate {target.name}: {note}.")
    groups = None if val.groups is None else val.groups.to_numpy()
    return write_served_outputs(
        Path(target.path),
        classes=target.classes,
        tta=target.default_tta,
        prior_correction=priors.correct,
        probabilities=val.probs.to_numpy(),
        labels=val.truth.to_numpy().argmax(axis=1),
        groups=groups,
    )


def calibrate_command(target_name: str, *, workspace: Path) -> int:
    """``zoo calibrate TARGET``: fit, store, and say what was chosen."""
    target = resolve_target(target_name, workspace)
    record = calibrate_target(target, workspace=workspace)
    console.info(f"Wrote {Path(target.path) / CALIBRATION_FILE}: {describe(record)}")
    return 0


def describe(record: CalibrationRecord) -> str:
    """One line: the method, its held-out NLL against none, and the operating point."""
    fit = record.fit
    text = f"calibration {record.method} (chosen on {fit['images']} validation images"
    if fit.get("cv_nll"):
        text += ", held-out NLL " + ", ".join(f"{m} {v:.3f}" for m, v in fit["cv_nll"].items())
    text += ")"
    point = record.operating_point
    if point is not None:
        val = point.get("val") or {}
        text += (
            f"; melanoma flag at {point['threshold']:.4f} (validation sensitivity "
            f"{_number(val.get('sensitivity'))}, specificity {_number(val.get('specificity'))})"
        )
    return text + (f"; note: {fit['note']}" if fit.get("note") else "")


def _number(value) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.2f}"
