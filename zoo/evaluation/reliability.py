"""The parts of ``zoo evaluate`` that say how far to trust a prediction: calibration,
operating points chosen on validation, and out-of-distribution separation.

Everything fitted here (temperature, thresholds) is fitted on the target's validation split of
its own training data, never on the evaluated images. :mod:`zoo.evaluation.evaluate` calls these in
order; each returns the block it adds to ``metrics.json`` (see ``docs/formats.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from zoo.errors import ZooError
from zoo.inference.ood import RECALL, ood_scores, separation
from zoo.inference.ood_features import SCORE
from zoo.scoring.calibration import (
    CALIBRATION_METRICS,
    N_BINS,
    calibration_metrics,
    calibration_parts,
    reliability_table,
    weighted_calibration,
)
from zoo.scoring.metrics import bootstrap_statistics
from zoo.scoring.operating_points import (
    DEFAULT_POINTS,
    OperatingPointSpec,
    operating_point_block,
    parse_operating_point,
)
from zoo.store.workspace import atomic_write_csv


class Outputs(NamedTuple):
    """A target's validation outputs: one-hot truth and probabilities (same rows), and the
    lesion of each image (``None`` where every image is its own lesion)."""

    truth: pd.DataFrame
    probs: pd.DataFrame
    groups: pd.Series | None = None


# --- validation -----------------------------------------------------------------------------


def validation_outputs(
    target, dataset, *, split: str, tta: str, priors, workspace: Path
) -> tuple[Outputs | None, str | None]:
    """Truth and probabilities (same TTA and prior settings) of the target's validation split,
    or ``None`` and the reason."""
    from zoo.data import load_dataset

    if split == "val":
        return None, "evaluated on the validation split itself: no calibration or operating points"
    try:
        ids = [str(i) for i in target.split_ids("val")]
    except (KeyError, ZooError):
        ids = []
    if not ids:
        return None, f"{target.name} has no validation split: no calibration or operating points"
    own = dataset.fingerprint == target.data_info.get("fingerprint")
    if not own:
        try:
            dataset = load_dataset(target.data_info["source"], workspace=workspace)
        except (ZooError, KeyError, OSError) as exc:
            return None, f"validation data of {target.name} unavailable ({exc}): no calibration"
        if dataset.fingerprint != target.data_info.get("fingerprint"):
            return None, f"the training data of {target.name} changed: no calibration"
    part = dataset.subset(ids)
    probs = target.probabilities(
        dataset, part.ids, tta=tta, prior_correction=priors.correct, workspace=workspace
    )
    probs = priors.apply(probs)
    truth = part.truth().sort_index()
    probs = probs.loc[truth.index, list(truth.columns)]
    return Outputs(truth, probs, dataset.lesion_groups(truth.index)), None


def resolve_calibrate(calibrate: bool | None, *, correct: bool, val, note: str | None) -> bool:
    """``None`` → on where a temperature can be fitted and prior correction is on."""
    if calibrate is None:
        return val is not None and correct
    if calibrate and val is None:
        raise ZooError(f"--calibrate needs the target's validation split; {note}.")
    return bool(calibrate)


# --- calibration ----------------------------------------------------------------------------


def _labels(truth: pd.DataFrame) -> np.ndarray:
    return truth.to_numpy().argmax(axis=1)


def _with_intervals(truth, probs, *, groups, n_resamples: int, seed: int) -> dict:
    values = calibration_metrics(probs.to_numpy(), _labels(truth))
    ci = None
    if n_resamples:
        parts = calibration_parts(probs.to_numpy(), _labels(truth))
        ci = bootstrap_statistics(
            truth.index,
            lambda counts: weighted_calibration(parts, counts),
            groups=groups,
            n_resamples=n_resamples,
            seed=seed,
        )
    return {**values, "ci95": ci}


def _parameters(scaler) -> dict:
    if hasattr(scaler, "parameters"):
        return scaler.parameters()
    return {"temperature": float(scaler.temperature_)}


def _n_fit(stored, val, scaler) -> int | None:
    if stored is not None:
        return int(stored.fit.get("images") or 0) or None
    return None if val is None or scaler is None else len(val[0])


def calibration_block(
    truth: pd.DataFrame,
    before: pd.DataFrame,
    after: pd.DataFrame,
    *,
    scaler,
    val: Outputs | None,
    groups,
    n_resamples: int,
    seed: int,
    out: Path,
    title: str,
) -> dict:
    """ECE, MCE, Brier and NLL before and after temperature scaling, with intervals; writes
    ``reliability.csv`` and ``reliability.png``."""
    from zoo.scoring.plots import plot_reliability

    kw = dict(groups=groups, n_resamples=n_resamples, seed=seed)
    stored = getattr(scaler, "record", None)  # a target's calibration.json, as served
    parameters = {} if scaler is None else _parameters(scaler)
    block = {
        "method": None if scaler is None else getattr(scaler, "method", "temperature"),
        "applied": scaler is not None,
        "stored": stored is not None,
        "temperature": parameters.get("temperature"),
        "parameters": parameters,
        "fitted_on": None if scaler is None else "val",
        "n_fit": _n_fit(stored, val, scaler),
        "n_bins": N_BINS,
        "metrics": list(CALIBRATION_METRICS),
        "before": _with_intervals(truth, before, **kw),
        "after": _with_intervals(truth, after, **kw) if scaler is not None else None,
    }
    tables = {"before": reliability_table(before.to_numpy(), _labels(truth))}
    if scaler is not None:
        tables["after"] = reliability_table(after.to_numpy(), _labels(truth))
    long = pd.concat([t.assign(calibration=k) for k, t in tables.items()], ignore_index=True)
    atomic_write_csv(out / "reliability.csv", long, index=False)
    plot_reliability(tables, out / "reliability.png", title=title, block=block, n=len(truth))
    return block


# --- operating points -----------------------------------------------------------------------


def operating_points_block(
    points: Sequence[OperatingPointSpec],
    *,
    val: Outputs | None,
    truth: pd.DataFrame,
    probs: pd.DataFrame,
    task: str | None,
    groups,
    n_resamples: int,
    seed: int,
) -> list[dict]:
    """Each requested point plus melanoma at 90 % / 95 % sensitivity and at least 90 % (where
    there is ``mel`` with positives and negatives in validation); empty without validation or
    with a task."""
    if val is None or task:
        if points:
            raise ZooError(
                "--operating-point needs the target's validation split (and no --task); "
                "evaluate the target's test split or other data."
            )
        return []
    wanted = list(points)
    classes = list(truth.columns)
    for text in DEFAULT_POINTS:
        spec = parse_operating_point(text)
        usable = spec.cls in classes and 0 < val[0][spec.cls].sum() < len(val[0])
        if usable and spec not in wanted:
            wanted.append(spec)
    blocks = []
    for spec in wanted:
        blocks.append(
            operating_point_block(
                spec,
                val_truth=val.truth,
                val_probs=val.probs,
                truth=truth,
                probs=probs,
                groups=groups,
                n_resamples=n_resamples,
                seed=seed,
                val_groups=val.groups,
            )
        )
    return blocks


def redraw_sens_spec(out: Path, truth, probs, blocks: list[dict], *, title: str) -> None:
    """``sens_spec.png`` with the validation-chosen operating points drawn on the curves."""
    from zoo.scoring.metrics import operating_points, sens_spec_curves
    from zoo.scoring.plots import plot_sens_spec

    chosen = {
        f"{b['class']} at val {b['metric']} {b['target']:g}": (
            b["class"],
            b["sensitivity"],
            b["specificity"],
        )
        for b in blocks
        if b["sensitivity"] is not None and b["specificity"] is not None
    }
    plot_sens_spec(
        sens_spec_curves(truth, probs),
        out / "sens_spec.png",
        title=title,
        operating_points=operating_points(truth, probs),
        chosen_points=chosen,
    )


# --- out of distribution --------------------------------------------------------------------


def ood_outputs(target, ood_data, *, tta: str, priors, scaler, workspace: Path) -> pd.DataFrame:
    """Probabilities of every image of ``ood_data``, processed as the evaluated ones."""
    probs = target.probabilities(
        ood_data, ood_data.ids, tta=tta, prior_correction=priors.correct, workspace=workspace
    )
    probs = priors.apply(probs)
    probs.attrs["spec"], probs.attrs["name"] = ood_data.spec, ood_data.name
    return probs if scaler is None else scaler.transform(probs)


def feature_scores(target, dataset, ids, ood_data, ood_ids, *, workspace: Path):
    """``(in-distribution scores, OOD scores, validation threshold)`` of the feature-space
    score (:mod:`zoo.inference.ood_features`), or a note saying why there are none."""
    from zoo.inference.ood_features import target_density

    density = target_density(target, workspace=workspace)
    if isinstance(density, str):
        return density
    return (
        density.dataset_scores(dataset, list(ids), workspace=workspace),
        density.dataset_scores(ood_data, list(ood_ids), workspace=workspace),
        density.threshold,
    )


def ood_block(
    probs: pd.DataFrame, ood: pd.DataFrame, *, out: Path | None = None, features=None, **_
) -> dict:
    """AUROC and FPR at 95 % recall of each OOD score; ``ood.csv`` of the scores per image.

    ``features``: :func:`feature_scores`' answer for the same images, in the same order (a
    note string when there are none); its score is added, with the share of each set flagged
    at the threshold chosen on validation."""
    inside, outside = ood_scores(probs.to_numpy()), ood_scores(ood.to_numpy())
    block = {
        "data": ood.attrs.get("spec"),
        "data_name": ood.attrs.get("name"),
        "n_in": len(probs),
        "n_out": len(ood),
        "scores": {},
        "flag": None,
        "note": features if isinstance(features, str) else None,
    }
    if features is not None and not isinstance(features, str):
        inside[SCORE], outside[SCORE], threshold = features
        block["flag"] = {
            "score": SCORE,
            "threshold": float(threshold),
            "chosen_on": f"validation, keeping {RECALL:.0%} of its images",
            "in_flagged": float(np.mean(inside[SCORE] < threshold)),
            "ood_flagged": float(np.mean(outside[SCORE] < threshold)),
        }
    block["scores"] = {name: separation(inside[name], outside[name]) for name in inside}
    if out is not None:
        rows = [
            pd.DataFrame({"image": frame.index.astype(str), "set": label, **scores})
            for frame, label, scores in ((probs, "in", inside), (ood, "ood", outside))
        ]
        atomic_write_csv(out / "ood.csv", pd.concat(rows, ignore_index=True), index=False)
    return block
