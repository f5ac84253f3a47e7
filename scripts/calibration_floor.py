"""How far temperature scaling and validation-chosen thresholds can go for a target.

    python scripts/calibration_floor.py TARGET [TARGET ...] --workspace WS [--tta steppan]

For each target, on its own validation and test splits (probabilities as ``zoo evaluate``
scores them: the given TTA, prior correction on), prints the expected calibration error on
test before temperature scaling, with the temperature fitted on validation (what ``zoo
evaluate`` applies), with the temperature that minimises the test NLL itself, and the lowest
test ECE of any temperature (a grid search on the test images): the floor of the method on
these images. It
also prints melanoma AUC on each split, which says whether a threshold chosen on validation can
be expected to keep its sensitivity on test. Nothing here is used to choose anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score


def split_outputs(target, dataset, part: str, *, tta: str, workspace: Path):
    """Class indices and prior-corrected probabilities of the target's ``part`` split."""
    from zoo.evaluation.evaluate import prior_settings

    priors = prior_settings(target, prior_correction=None, target_priors=None)
    subset = dataset.subset([str(i) for i in target.split_ids(part)])
    probs = target.probabilities(
        dataset, subset.ids, tta=tta, prior_correction=priors.correct, workspace=workspace
    )
    probs = priors.apply(probs)
    truth = subset.truth().sort_index()
    return truth.to_numpy().argmax(axis=1), probs.loc[truth.index, list(truth.columns)].to_numpy()


def report(name: str, *, workspace: Path, tta: str) -> None:
    from zoo.data import load_dataset
    from zoo.ensembles.targets import resolve_target
    from zoo.scoring.calibration import TemperatureScaling, as_logits, calibration_metrics

    target = resolve_target(name, workspace)
    dataset = load_dataset(target.data_info["source"], workspace=workspace)
    y_val, p_val = split_outputs(target, dataset, "val", tta=tta, workspace=workspace)
    y_test, p_test = split_outputs(target, dataset, "test", tta=tta, workspace=workspace)
    fitted = TemperatureScaling().fit(as_logits(p_val), y_val)
    best = TemperatureScaling().fit(as_logits(p_test), y_test)
    print(f"{name} (TTA {tta}; validation {len(y_val)} images, test {len(y_test)})")
    for label, scaler in [("no temperature", None), ("fitted on validation", fitted)] + [
        ("best for the test images", best)
    ]:
        probs = p_test if scaler is None else scaler.transform(p_test)
        t = "" if scaler is None else f" (T = {scaler.temperature_:.3f})"
        print(f"  test ECE, {label}{t}: {calibration_metrics(probs, y_test)['ece']:.4f}")
    grid = np.geomspace(0.2, 5.0, 400)  # the lowest test ECE any temperature gives
    scaled = TemperatureScaling()
    eces = []
    for scaled.temperature_ in grid:
        eces.append(calibration_metrics(scaled.transform(p_test), y_test)["ece"])
    k = int(np.argmin(eces))
    print(f"  test ECE, lowest over temperatures 0.2–5 (T = {grid[k]:.3f}): {eces[k]:.4f}")
    classes = list(target.classes)
    if "mel" in classes:
        k = classes.index("mel")
        for part, y, p in (("validation", y_val, p_val), ("test", y_test, p_test)):
            auc = roc_auc_score(y == k, p[:, k])
            print(f"  melanoma AUC on {part}: {auc:.4f} ({int(np.sum(y == k))} melanomas)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--tta", default="steppan")
    args = parser.parse_args(argv)
    for name in args.targets:
        report(name, workspace=Path(args.workspace), tta=args.tta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
