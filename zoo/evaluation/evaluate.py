"""``zoo evaluate``: score a member or ensemble and write the evidence.

:func:`evaluate_target` is the library call (the CLI, the leaderboard and the benchmark
scripts use it). It writes, in its output folder:

- ``truth.csv`` and ``predictions.csv`` in ISIC format, rows sorted by image id (the official
  scorer applies ``score_weight`` by position after sorting the truth), ``image`` first, then
  the target's classes in its order; ``truth.csv`` has ``score_weight`` when the data has it;
- ``metrics.json``: ``zoo.scoring.metrics.score`` of exactly those two files (the shape of
  ``isic_challenge_scoring.ClassificationScore.to_dict(rocs=False)``), ``ci95`` (bootstrap over
  lesions, an interval for every AUC it reports), the task block of ``--task``, and the
  settings (TTA scheme, prior correction with the priors used), data and timing behind them;
- ``roc.csv``/``roc.png``, ``sens_spec.csv``/``sens_spec.png`` and ``confusion.png``.

Every file and ``metrics.json`` key is described in ``docs/formats.md``.

The Python API's ``zoo.evaluate(target, …)`` (:func:`zoo.api.evaluate`) calls it.

The folder is built under a temporary name and swapped in when complete, so a failed run
leaves the previous evaluation whole. The prior settings here (:func:`prior_settings`) serve
``zoo predict`` (:mod:`zoo.deploy.predict`) too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from zoo import console
from zoo.data import Dataset, load_dataset
from zoo.data.dataset import safe_name
from zoo.data.label_maps import apply_label_map, read_label_map
from zoo.ensembles.targets import Target, resolve_target
from zoo.errors import ZooError, close_matches
from zoo.evaluation.reliability import (
    calibration_block,
    feature_scores,
    ood_block,
    ood_outputs,
    operating_points_block,
    redraw_sens_spec,
    resolve_calibrate,
    validation_outputs,
)
from zoo.evaluation.subgroups import subgroup_report, subgroups_block
from zoo.inference.calibrated import Calibration, load_calibration
from zoo.inference.tta import parse_tta
from zoo.scoring.calibration import TemperatureScaling, as_logits
from zoo.scoring.metrics import (
    argmax_labels,
    argmax_rates,
    bootstrap_ci,
    operating_points,
    roc_table,
    score,
)
from zoo.scoring.metrics import sens_spec_curves as class_curves
from zoo.scoring.operating_points import parse_operating_point
from zoo.scoring.priors import PriorCorrection, checked_target_priors, load_target_priors
from zoo.scoring.taxonomy import TASKS, score_task, task_scores
from zoo.store import METRICS_FILE, EvaluationRecord, Layout
from zoo.store.locks import hold
from zoo.store.outputs import claim_output_folder, output_folder
from zoo.store.workspace import atomic_write_csv

SPLITS = ("test", "val", "all")
BOOTSTRAP_SEED = 0


# --- checks ---------------------------------------------------------------------------------


def check_task(task: str | None) -> None:
    if task is not None and task not in TASKS:
        raise ZooError(
            f"unknown --task {task!r}; choose one of {', '.join(TASKS)}.{close_matches(task, list(TASKS))}"
        )


MAX_BOOTSTRAP = 100_000


def check_bootstrap(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_BOOTSTRAP:
        raise ZooError(
            f"--bootstrap must be a whole number from 0 (no intervals) to {MAX_BOOTSTRAP:,}; "
            f"got {n!r}."
        )


# --- prior correction -----------------------------------------------------------------------


def training_priors(target: Target) -> dict | None:
    """Effective training priors behind the correction: ``{class: prior}`` for a member,
    ``{member: {class: prior}}`` for an ensemble (corrected member by member)."""

    def of(member) -> dict[str, float]:
        values = np.asarray(member.effective_priors, dtype=float)
        return {str(c): float(v) for c, v in zip(member.classes, values, strict=True)}

    if getattr(target, "member", None) is not None:
        return of(target.member)
    if getattr(target, "members", None) is not None:
        return {m.name: of(m) for m in target.members}
    return None


@dataclasses.dataclass
class PriorSettings:
    """How the probabilities were prior-corrected; ``shift`` re-weights the target's
    (uniform-prior) output to the target priors, ``None`` when they are uniform."""

    correct: bool
    record: dict
    shift: PriorCorrection | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    # the target's stored calibration, where it holds for these settings and is wanted
    calibration: Calibration | None = None
    calibration_record: dict | None = None  # how the served outputs were calibrated

    def apply(self, probabilities: pd.DataFrame) -> pd.DataFrame:
        """Prior-corrected towards the target priors (the calibration is not applied)."""
        if self.shift is None:
            return probabilities
        shifted = self.shift.transform(probabilities)
        shifted.attrs = dict(probabilities.attrs)
        return shifted

    def served(self, probabilities: pd.DataFrame) -> pd.DataFrame:
        """What zoo serves: :meth:`apply`, then the stored calibration where it holds."""
        shifted = self.apply(probabilities)
        if self.calibration is None or self.calibration.method == "none":
            return shifted
        return self.calibration.transform(shifted)


def prior_settings(
    target: Target,
    *,
    prior_correction: bool | None,
    target_priors: str | Mapping[str, float] | None,
    tta=None,
    calibrated: bool = True,
) -> PriorSettings:
    """Resolve ``--no-prior-correction`` / ``--target-priors`` for ``target``.

    ``prior_correction=None`` is the target's default, turned on by ``target_priors``;
    ``target_priors``: ``None`` or ``"uniform"`` (the correction's own target), a JSON file
    name, or a ``{class: prior}`` mapping. The target's correction divides by its effective
    training priors (giving uniform priors); target priors then multiply and renormalise.
    """
    if target_priors is not None and prior_correction is False:
        raise ZooError(
            "--target-priors needs prior correction; drop --no-prior-correction or --target-priors."
        )
    correct = bool(
        target.default_prior_correction
        if prior_correction is None and target_priors is None
        else prior_correction is not False
    )
    if target_priors is None:
        priors, notes, source = None, [], "uniform"
    elif isinstance(target_priors, str):
        priors, notes = load_target_priors(target_priors, target.classes)
        is_word = target_priors.strip().lower() == "uniform"
        source = "uniform" if is_word else str(target_priors)
    else:
        priors, notes = checked_target_priors(target_priors, target.classes)
        source = "mapping"
    classes = [str(c) for c in target.classes]
    if priors is None:
        priors = pd.Series(1.0 / len(classes), index=classes)
    shift = None
    if correct and not np.allclose(priors.to_numpy(), 1.0 / len(classes), rtol=0, atol=1e-12):
        shift = PriorCorrection(target_priors=priors).fit(pd.Series(1.0, index=classes))
    record = {
        "correction": correct,
        "training_priors": training_priors(target) if correct else None,
        "target_priors": {c: float(priors[c]) for c in classes} if correct else None,
        "target_priors_source": source if correct else None,
    }
    settings = PriorSettings(correct=correct, record=record, shift=shift, notes=notes)
    tta = target.default_tta if tta is None else tta
    settings.calibration, note = served_calibration(target, settings, tta, calibrated=calibrated)
    settings.notes += [note] if note else []
    settings.calibration_record = _calibration_record(settings.calibration, calibrated)
    return settings


def served_calibration(target, settings: PriorSettings, tta, *, calibrated: bool):
    """The target's stored calibration where it holds for these outputs, and a note where
    it does not (None when it was switched off or holds)."""
    if not calibrated:
        return None, None
    stored = load_calibration(target)
    if stored is None:
        return None, (
            f"{target.name} has no stored calibration: its probabilities are served "
            f"uncalibrated; zoo calibrate {target.name} fits one on its validation split"
        )
    why = stored.fits(tta, settings.correct, shifted=settings.shift is not None)
    if why is not None:
        return None, f"stored calibration not applied: it was fitted for other outputs ({why})"
    return stored, None


def _calibration_record(calibration, calibrated: bool) -> dict:
    """How the served probabilities were calibrated, for ``metrics.json`` and sidecars."""
    if calibration is None:
        return {"applied": False, "switched_off": not calibrated}
    return {
        "applied": calibration.method != "none",
        "method": calibration.method,
        "parameters": calibration.parameters(),
        "file": str(calibration.file),
    }


def tta_record(scheme) -> dict:
    """The TTA scheme as recorded beside its outputs."""
    return {
        "spec": scheme.spec,
        "n_views": scheme.n_views,
        "weights": [float(w) for w in scheme.weights],
    }


# --- data -----------------------------------------------------------------------------------


def is_training_data(target: Target, dataset: Dataset) -> bool:
    return dataset.fingerprint == target.data_info.get("fingerprint")


def resolve_split(target: Target, dataset: Dataset, split: str | None) -> str:
    """``test`` on the target's training data, ``all`` on other data, unless asked."""
    own = is_training_data(target, dataset)
    if split is None:
        return "test" if own else "all"
    if split not in SPLITS:
        raise ZooError(f"unknown --split {split!r}; choose one of {', '.join(SPLITS)}.")
    if split != "all" and not own:
        raise ZooError(
            f"--split {split}: {target.name} was not trained on {dataset.spec} (fingerprint "
            f"{dataset.fingerprint} ≠ {target.data_info.get('fingerprint')}), so that data has no "
            f"recorded {split} part; use --split all (the default on other data)."
        )
    return split


def split_ids(target: Target, dataset: Dataset, split: str) -> list[str]:
    return dataset.ids if split == "all" else list(target.split_ids(split))


def load_evaluation_data(
    target: Target, spec: str | None, *, workspace: Path, images: str | None = None
) -> Dataset:
    """``--data`` if given, else the data the target was trained on (which must be unchanged)."""
    recorded = target.data_info
    try:
        dataset = load_dataset(
            spec or recorded["source"],
            workspace=workspace,
            images=Path(images) if images else None,
        )
    except ZooError as exc:
        if spec is not None:
            raise
        raise ZooError(
            f"cannot load the training data of {target.name} ({exc}); pass --data SPEC."
        ) from None
    if spec is None and dataset.fingerprint != recorded.get("fingerprint"):
        raise ZooError(
            f"the training data {recorded['source']} of {target.name} changed since training "
            f"(fingerprint {recorded.get('fingerprint')} → {dataset.fingerprint}); pass --data "
            "explicitly to evaluate on it as other data (--split all)."
        )
    return dataset


# --- the evaluation -------------------------------------------------------------------------


def default_out(
    target: Target,
    dataset: Dataset,
    *,
    split,
    tta,
    prior_correction,
    task,
    workspace,
    target_priors: str | None = None,
    uncalibrated: bool = False,
) -> Path:
    """``<workspace>/evaluations/<target>-<data>-<split>[-<tta>][-raw][-uncalibrated]
    [-priors-<name>][-<task>]`` (``target_priors``: the name of non-uniform target priors;
    ``uncalibrated``: calibration could be fitted but was turned off)."""
    name = f"{target.name}-{safe_name(dataset.name)}-{split}"
    name += "" if tta.kind == "none" else f"-{tta.name}"
    name += "" if prior_correction else "-raw"
    name += "-uncalibrated" if uncalibrated else ""
    name += f"-priors-{safe_name(target_priors)}" if target_priors else ""
    name += f"-{task}" if task else ""
    return Layout(workspace).evaluation(name)


def _write_scored(out: Path, truth, predictions, weights):
    """Write truth.csv / predictions.csv and read them back: the scores are computed from
    exactly the numbers the official scorer would read."""
    t = truth if weights is None else truth.assign(score_weight=weights.loc[truth.index])
    atomic_write_csv(out / "truth.csv", t.rename_axis("image"))
    atomic_write_csv(out / "predictions.csv", predictions.rename_axis("image"))
    read = lambda name: pd.read_csv(out / name, dtype={"image": str}).set_index("image")  # noqa: E731
    truth_back = read("truth.csv")
    w = truth_back.pop("score_weight") if weights is not None else None
    return truth_back, read("predictions.csv"), w


def _class_files(out: Path, truth, predictions, *, title: str) -> None:
    from zoo.scoring.plots import plot_confusion, plot_roc, plot_sens_spec

    roc = roc_table(truth, predictions)
    atomic_write_csv(out / "roc.csv", roc, index=False)
    sens_spec = pd.DataFrame(
        {
            "class": roc["class"],
            "sensitivity": roc["tpr"],
            "specificity": 1 - roc["fpr"],
            "threshold": roc["threshold"],
        }
    )
    atomic_write_csv(out / "sens_spec.csv", sens_spec, index=False)
    plot_roc(truth, predictions, out / "roc.png", title=title)
    plot_sens_spec(
        class_curves(truth, predictions),
        out / "sens_spec.png",
        title=title,
        operating_points=operating_points(truth, predictions),
    )
    classes = list(truth.columns)
    predicted = argmax_labels(predictions.to_numpy())
    names = np.array([*classes, "undecided"], dtype=object)[predicted]  # -1 → undecided
    plot_confusion(truth.idxmax(axis=1).tolist(), names.tolist(), classes, out / "confusion.png")


def _task_block(truth, predictions, task, *, auc_ci95, out: Path, title: str) -> dict:
    """Esteva's binary task: AUC with interval, sens/spec at 0.5, the curve, files."""
    from zoo.scoring.plots import plot_confusion, plot_roc, plot_sens_spec

    result = score_task(truth, predictions, task)
    y, s, ids = task_scores(truth, predictions, task)
    binary_truth = pd.DataFrame({"malignant": y, "benign": 1 - y}, index=ids, dtype=float)
    binary = pd.DataFrame({"malignant": s, "benign": 1 - s}, index=ids)
    result["positive_classes"], result["negative_classes"] = _task_sides(truth.columns, task)
    result["auc_ci95"] = auc_ci95 if result["auc"] is not None else None
    curve = pd.DataFrame(result["curve"])[["threshold", "sensitivity", "specificity"]]
    atomic_write_csv(out / "sens_spec.csv", curve, index=False)
    roc = curve.assign(fpr=1 - curve["specificity"], tpr=curve["sensitivity"], task=task)
    atomic_write_csv(out / "roc.csv", roc[["task", "fpr", "tpr", "threshold"]], index=False)
    label = f"{TASKS[task].title}"
    points = {}
    if result["sensitivity"] is not None and result["specificity"] is not None:
        points[label] = (result["sensitivity"], result["specificity"])
    curves = (
        {label: (curve["sensitivity"], curve["specificity"], result["auc"])} if len(curve) else {}
    )
    plot_sens_spec(curves, out / "sens_spec.png", title=title, operating_points=points)
    plot_roc(binary_truth, binary, out / "roc.png", title=title)
    decided = np.where(s > 0.5, "malignant", "benign")
    truth_names = np.where(y == 1, "malignant", "benign")
    plot_confusion(
        truth_names.tolist(), decided.tolist(), ["malignant", "benign"], out / "confusion.png"
    )
    return result


def _task_sides(columns, task: str) -> tuple[list[str], list[str]]:
    from zoo.scoring.taxonomy import task_columns

    malignant, benign = task_columns(columns, task)
    return [str(c) for c in malignant], [str(c) for c in benign]


def _restrict_to_task(truth, predictions, weights, task):
    _, _, ids = task_scores(truth, predictions, task)
    if len(ids) == 0:
        spec = TASKS[task]
        raise ZooError(
            f"--task {task}: none of the evaluated images has a class of the task "
            f"({', '.join(spec.classes)}); evaluate data that has them."
        )
    return truth.loc[ids], predictions.loc[ids], None if weights is None else weights.loc[ids]


def evaluate_target(
    target: Target,
    dataset: Dataset,
    *,
    split: str | None = None,
    tta: str | None = None,
    prior_correction: bool | None = None,
    label_map: Mapping[str, str] | None = None,
    ignore_unmapped: bool = False,
    task: str | None = None,
    bootstrap: int = 1000,
    target_priors: str | Mapping[str, float] | None = None,
    calibrate: bool | None = None,
    operating_points: Sequence[str] = (),
    ood_data: Dataset | None = None,
    tsne: bool = False,
    out: str | Path | None = None,
    workspace: Path,
) -> Path:
    """Score ``target`` on ``split`` of ``dataset``; write the files; return the folder.

    ``None`` means the default: split ``test`` on the target's training data and ``all``
    elsewhere; the target's TTA and prior correction; uniform target priors (see
    :func:`prior_settings`); the folder of :func:`default_out`. Calibration (``None``: on
    where it can be fitted and prior correction is on) and ``operating_points``
    (``CLASS:sensitivity=V`` …; melanoma at 90 % and 95 % sensitivity always) are fitted on
    the target's validation split, never on the evaluated images. ``ood_data``: images from
    elsewhere to separate from the evaluated ones; ``tsne``: a t-SNE map of the features.
    """
    scheme = parse_tta(tta if tta is not None else target.default_tta)
    priors = prior_settings(
        target,
        prior_correction=prior_correction,
        target_priors=target_priors,
        tta=scheme,
        calibrated=calibrate is not False,
    )
    points = _checked_requests(target, task, bootstrap, operating_points)
    dataset, split, evaluated = _evaluated_part(
        target, dataset, split, label_map, ignore_unmapped=ignore_unmapped
    )
    overlap = _training_overlap(target, dataset, evaluated, workspace=workspace)
    probs, timing = _predicted(target, dataset, evaluated, scheme, priors, workspace=workspace)
    truth, probs, weights = _aligned(evaluated, probs, task)
    uncalibrated, switched_off = probs, calibrate is False
    calibrate, scaler, probs, val, val_note, ood = _fitted_on_validation(
        target, dataset, probs, split, scheme, priors, calibrate, ood_data, workspace=workspace
    )
    uncalibrated_name = val is not None and priors.correct and switched_off
    out = out or _default_folder(
        target,
        dataset,
        split,
        scheme,
        priors,
        task,
        target_priors,
        uncalibrated=uncalibrated_name,
        workspace=workspace,
    )
    out = _checked_out(Path(out), workspace=workspace)
    with _evaluation_folder(out, target, workspace=workspace) as tmp:
        truth, probs, weights = _write_scored(tmp, truth, probs, weights)
        title = f"{target.name} on {dataset.name} ({split})"
        groups = evaluated.lesion_groups(truth.index)
        metrics = _metrics(
            truth,
            probs,
            weights,
            groups=groups,
            task=task,
            bootstrap=bootstrap,
            out=tmp,
            title=title,
        )
        metrics.update(
            _trust_blocks(
                tmp,
                target=target,
                dataset=dataset,
                groups=groups,
                truth=truth,
                outputs=(uncalibrated, probs, scaler, val),
                points=points,
                task=task,
                bootstrap=bootstrap,
                ood=(ood_data, ood),
                tsne=tsne,
                title=title,
                workspace=workspace,
            )
        )
        metrics["notes"] = _notes(evaluated, metrics, weighted=weights is not None, task=task)
        metrics["notes"] += [*priors.notes, *([val_note] if val_note else [])]
        metrics["notes"] += _overlap_notes(overlap, target)
        metrics["training_duplicates"] = overlap
        settings = _settings(split, scheme, priors, label_map, ignore_unmapped, bootstrap)
        metrics.update(_record(target, dataset, settings, timing))
        EvaluationRecord.from_dict(metrics).write(tmp / METRICS_FILE)
    return out


@contextlib.contextmanager
def _evaluation_folder(out: Path, target, *, workspace: Path):
    """The evaluation folder, locked and built under a temporary name with zoo's marker."""
    what = f"zoo evaluate {target.name}"
    with (
        hold(out, what=what),
        output_folder(
            out, "evaluation", written_by=what, workspace=workspace, legacy=EVALUATION_FILES
        ) as tmp,
    ):
        yield tmp


def _checked_requests(target, task, bootstrap, operating_points) -> list:
    """``task`` and ``bootstrap`` checked, and the parsed operating points."""
    check_task(task)
    check_bootstrap(bootstrap)
    return [parse_operating_point(p, target.classes) for p in operating_points]


def _evaluated_part(target, dataset, split, label_map, *, ignore_unmapped: bool):
    """The data set in the target's inference classes, the split, and its evaluated images
    with ``label_map`` applied."""
    dataset = _in_inference_classes(target, dataset, label_map)
    split = resolve_split(target, dataset, split)
    evaluated = apply_label_map(
        dataset.subset(split_ids(target, dataset, split)),
        label_map,
        target.classes,
        ignore_unmapped=ignore_unmapped,
    )
    return dataset, split, evaluated


def _default_folder(
    target, dataset, split, scheme, priors, task, target_priors, *, uncalibrated, workspace
) -> Path:
    """:func:`default_out` for these settings."""
    return default_out(
        target,
        dataset,
        split=split,
        tta=scheme,
        prior_correction=priors.correct,
        task=task,
        workspace=workspace,
        target_priors=_priors_tag(target_priors) if priors.shift is not None else None,
        uncalibrated=uncalibrated,
    )


def _fitted_on_validation(
    target, dataset, probs, split, scheme, priors, calibrate, ood_data, *, workspace: Path
):
    """What the target's validation split decides, never the evaluated images: whether to
    calibrate and the temperature (applied to ``probs`` and to the validation outputs), and
    the OOD data's outputs under the same settings. Returns ``(calibrate, scaler, probs,
    val, val_note, ood)``."""
    val, val_note = validation_outputs(
        target, dataset, split=split, tta=scheme.spec, priors=priors, workspace=workspace
    )
    stored = priors.calibration
    if calibrate is None and stored is not None and stored.method == "none":
        calibrate, scaler = False, None  # the stored choice: none (as served)
    elif calibrate is None and stored is not None:  # the stored one: as served
        calibrate, scaler = True, stored
        probs = scaler.transform(probs)
        val = val if val is None else val._replace(probs=scaler.transform(val.probs))
    else:
        calibrate = resolve_calibrate(calibrate, correct=priors.correct, val=val, note=val_note)
        scaler, probs, val = _calibrated(probs, val) if calibrate else (None, probs, val)
        if calibrate:
            priors.notes.append(
                "the temperature was fitted for this evaluation only; zoo predict serves "
                f"the stored calibration (zoo calibrate {target.name} stores one)"
            )
    ood = None
    if ood_data is not None:
        ood = ood_outputs(
            target, ood_data, tta=scheme.spec, priors=priors, scaler=scaler, workspace=workspace
        )
    return calibrate, scaler, probs, val, val_note, ood


def _trust_blocks(
    tmp: Path,
    *,
    target,
    dataset,
    groups,
    truth,
    outputs,
    points,
    task,
    bootstrap,
    ood,
    tsne,
    title: str,
    workspace: Path,
) -> dict:
    """The ``calibration``, ``operating_points``, ``ood``, ``embedding`` and ``subgroups``
    blocks of ``metrics.json`` (with their plots in ``tmp``). ``outputs``: the probabilities
    before and after calibration, the fitted scaler and the validation outputs; ``ood``: the
    OOD data set and its outputs."""
    uncalibrated, probs, scaler, val = outputs
    ood_data, ood_probs = ood
    extra = dict(groups=groups, n_resamples=bootstrap, seed=BOOTSTRAP_SEED)
    blocks = {
        "calibration": calibration_block(
            truth, uncalibrated, probs, scaler=scaler, val=val, out=tmp, title=title, **extra
        ),
        "operating_points": operating_points_block(
            points, val=val, truth=truth, probs=probs, task=task, **extra
        ),
        "ood": None,
        "embedding": None,
        "subgroups": None,
    }
    if ood_probs is not None:
        blocks["ood"] = _ood_block(
            target, dataset, probs, ood_data, ood_probs, out=tmp, workspace=workspace
        )
    if tsne:
        blocks["embedding"] = _tsne_block(
            target, dataset, truth, probs, out=tmp, workspace=workspace, title=title
        )
    if blocks["operating_points"] and not task:
        redraw_sens_spec(tmp, truth, probs, blocks["operating_points"], title=title)
    if not task:
        metadata, points = dataset.metadata(truth.index), blocks["operating_points"]
        blocks["subgroups"] = subgroups_block(
            truth, probs, metadata, operating_points=points, out=tmp, title=title, **extra
        )
    return blocks


def _predicted(target, dataset, evaluated, scheme, priors, *, workspace: Path):
    """The target's probabilities on the evaluated images, prior settings applied, and how
    long they took."""
    start = time.perf_counter()
    probs = target.probabilities(
        dataset,
        evaluated.ids,
        tta=scheme.spec,
        prior_correction=priors.correct,
        workspace=workspace,
    )
    probs = priors.apply(probs)
    return probs, _timing(probs, seconds=time.perf_counter() - start, images=len(evaluated))


def _calibrated(probs: pd.DataFrame, val):
    """Temperature scaling fitted on the validation outputs: (scaler, test, validation)."""
    scaler = TemperatureScaling().fit(as_logits(val[1].to_numpy()), val[0].to_numpy())
    return scaler, scaler.transform(probs), val._replace(probs=scaler.transform(val.probs))


def _ood_block(target, dataset, probs, ood_data, ood, *, out: Path, workspace: Path) -> dict:
    """The ``ood`` block: probability scores and the feature density's, against ``ood``."""
    features = feature_scores(
        target, dataset, probs.index, ood_data, ood.index, workspace=workspace
    )
    return ood_block(probs, ood, out=out, features=features)


def _tsne_block(target, dataset, truth, probs, *, out: Path, workspace: Path, title: str):
    """The ``embedding`` block: a t-SNE map of the last hidden layer."""
    from zoo.inference.embedding import write_tsne

    return write_tsne(target, dataset, truth, probs, out=out, workspace=workspace, title=title)


def _settings(split, scheme, priors, label_map, ignore_unmapped: bool, bootstrap: int) -> dict:
    """The ``settings`` block of ``metrics.json``: what the evaluation was asked to do."""
    return {
        "split": split,
        "tta": scheme.spec,
        "tta_scheme": tta_record(scheme),
        "prior_correction": bool(priors.correct),
        "priors": priors.record,
        "served_calibration": priors.calibration_record,
        "label_map": dict(label_map) if label_map else None,
        "ignore_unmapped": ignore_unmapped,
        "bootstrap": {"n_resamples": bootstrap, "seed": BOOTSTRAP_SEED},
    }


def _in_inference_classes(target: Target, dataset: Dataset, label_map) -> Dataset:
    """A member trained with ``--partition`` maps the taxonomy's fine labels onto its
    inference classes by itself (``member.json`` ``partition.label_map``), unless
    ``--label-map`` is given; the data keeps its fingerprint (the same images and data)."""
    member = getattr(target, "member", None)
    partition = member.info.get("partition") if member is not None else None
    if not partition or label_map:
        return dataset
    mapping = {k: v for k, v in partition["label_map"].items() if k not in target.classes}
    mapped = apply_label_map(dataset, mapping, target.classes)
    return dataclasses.replace(mapped, read_fingerprint=dataset.fingerprint)


def _training_overlap(target: Target, dataset: Dataset, evaluated: Dataset, *, workspace):
    """Evaluated images that duplicate the target's training images (other data only: the
    training data's own split keeps duplicates together); warns with the count."""
    if is_training_data(target, dataset):
        return None
    from zoo.data.leakage import training_overlap

    overlap = training_overlap(target, dataset, evaluated.ids, workspace=workspace)
    if overlap and overlap["duplicates"]:
        console.warn(_overlap_notes(overlap, target)[0])
    return overlap


def _overlap_notes(overlap: dict | None, target: Target) -> list[str]:
    if not overlap or not overlap["duplicates"]:
        return []
    shown = ", ".join(e["image"] for e in overlap["examples"][:3])
    return [
        f"{overlap['duplicates']} of {overlap['images']} evaluated image(s) duplicate training "
        f"images of {target.name} (perceptual hash within {overlap['max_distance']} bits, e.g. "
        f"{shown}); their scores flatter the model — evaluate on data without them"
    ]


EVALUATION_FILES = frozenset(
    {"truth.csv", "predictions.csv", "metrics.json", "roc.csv", "roc.png"}
    | {"sens_spec.csv", "sens_spec.png", "confusion.png"}
    | {"reliability.csv", "reliability.png", "ood.csv", "tsne.csv", "tsne.png"}
)


def _checked_out(out: Path, *, workspace: Path) -> Path:
    """The evaluation folder, absolute. The whole folder is replaced, so one that holds
    anything must be zoo's earlier evaluation (:func:`zoo.store.outputs.claim_output_folder`:
    its marker, or inside the workspace only the files an evaluation holds)."""
    return claim_output_folder(out, "evaluation", workspace=workspace, legacy=EVALUATION_FILES)


def _priors_tag(target_priors) -> str:
    """A short name of non-uniform target priors for the default folder name."""
    if isinstance(target_priors, str):
        return Path(target_priors).stem
    text = json.dumps({str(k): float(v) for k, v in dict(target_priors).items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _timing(probs: pd.DataFrame, *, seconds: float, images: int) -> dict:
    """Wall-clock time of this call, and of the model run behind a cached answer."""
    model = dict(probs.attrs.get("inference") or {})
    return {
        "seconds": seconds,
        "images": images,
        "images_per_second": images / seconds if seconds > 0 else None,
        "cached": model.get("cached"),
        "model_seconds": model.get("seconds"),
        "model_images_per_second": model.get("images_per_second"),
    }


def _aligned(evaluated: Dataset, probs: pd.DataFrame, task: str | None):
    """Truth, predictions (same rows, sorted by image id; the model's class order) and
    weights, restricted to the task's images for ``--task``."""
    truth = evaluated.truth().sort_index()
    probs = probs.loc[truth.index, list(truth.columns)]
    weights = None if evaluated.weights is None else evaluated.weights.loc[truth.index]
    if task:
        return _restrict_to_task(truth, probs, weights, task)
    return truth, probs, weights


def _metrics(truth, probs, weights, *, groups, task, bootstrap, out: Path, title: str) -> dict:
    """Official scores, class counts, bootstrap intervals, the task block, curves and plots.

    One bootstrap pass gives the intervals of balanced accuracy, every per-class and macro
    ``auc`` and ``auc_sens_80`` and, with ``task``, the task's AUC (``ci95.task_auc``)."""
    metrics = score(truth, probs, weights=weights)
    metrics["class_counts"] = {c: int(v) for c, v in truth.sum(axis=0).items()}
    metrics["ci95"] = None
    if bootstrap:
        binary = None
        if task:
            y, s, ids = task_scores(truth, probs, task)
            binary = {task: pd.DataFrame({"truth": y, "score": s}, index=ids)}
        metrics["ci95"] = bootstrap_ci(
            truth, probs, groups=groups, n_resamples=bootstrap, seed=BOOTSTRAP_SEED, binary=binary
        )
    metrics["task"] = None
    if not task:
        metrics["argmax"] = argmax_rates(
            truth, probs, groups=groups, n_resamples=bootstrap, seed=BOOTSTRAP_SEED
        )
        _class_files(out, truth, probs, title=title)
        return metrics
    ci = metrics["ci95"]
    task_ci = ci.pop("binary")[task]["auc"] if ci is not None else None
    metrics["task"] = _task_block(truth, probs, task, auc_ci95=task_ci, out=out, title=title)
    if ci is not None:
        ci["task_auc"] = metrics["task"]["auc_ci95"]
    return metrics


def _notes(evaluated: Dataset, metrics: dict, *, weighted: bool, task: str | None) -> list[str]:
    notes = list(evaluated.notes)
    if weighted and metrics["ci95"] is not None:
        notes.append("bootstrap intervals ignore score_weight (unweighted resampling)")
    if metrics["absent_classes"] and not task:
        notes.append(
            f"classes absent from the data: {', '.join(metrics['absent_classes'])} — null "
            "metrics, left out of macro averages"
        )
    return notes


def _record(target: Target, dataset: Dataset, settings: dict, timing: dict) -> dict:
    """What was evaluated, how, how fast, with which zoo: the rest of metrics.json."""
    import zoo

    return {
        "target": {"name": target.name, "kind": target.kind, "path": str(target.path)},
        "data": {
            "spec": dataset.spec,
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "training_data": is_training_data(target, dataset),
        },
        **settings,
        "inference": timing,
        "zoo_version": zoo.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --- the table ------------------------------------------------------------------------------


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _fmt_ci(interval) -> str:
    return "" if not interval else f"{interval[0]:.3f}–{interval[1]:.3f}"


def _title(metrics: dict) -> str:
    return (
        f"{metrics['target']['name']} on {metrics['data']['name']} {metrics['split']} · "
        f"{metrics['n_images']} images · TTA {metrics['tta']} · "
        f"{'prior-corrected' if metrics['prior_correction'] else 'raw'}"
    )


def _class_table(metrics: dict) -> Table:
    ci = metrics.get("ci95") or {}
    table = Table(title=_title(metrics), show_edge=False)
    for column in ("class", "n", "sens.", "spec.", "AUC", "95 % CI"):  # sens., spec.: argmax
        table.add_column(column, justify="left" if column == "class" else "right")
    per, rates = metrics["per_category"], metrics["argmax"]
    for c in metrics["classes"]:
        table.add_row(
            c,
            str(metrics["class_counts"][c]),
            _fmt(rates["sensitivity"][c]),
            _fmt(rates["specificity"][c]),
            _fmt(per["auc"][c]),
            _fmt_ci((ci.get("auc") or {}).get(c)),
        )
    table.add_section()
    balanced = metrics["aggregate"]["balanced_accuracy"]
    table.add_row("balanced acc.", "", "", "", _fmt(balanced), _fmt_ci(ci.get("balanced_accuracy")))
    table.add_row(
        "macro AUC", "", "", "", _fmt(metrics["macro_average"]["auc"]), _fmt_ci(ci.get("macro_auc"))
    )
    return table


def _task_table(metrics: dict) -> Table:
    task = metrics["task"]
    table = Table(title=f"{_title(metrics)}\n{task['title']} (threshold 0.5)", show_edge=False)
    for column in ("task", "malignant", "benign", "sens.", "spec.", "AUC", "95 % CI"):
        table.add_column(column, justify="left" if column == "task" else "right")
    table.add_row(
        task["task"],
        str(task["n_positive"]),
        str(task["n_negative"]),
        _fmt(task["sensitivity"]),
        _fmt(task["specificity"]),
        _fmt(task["auc"]),
        _fmt_ci(task["auc_ci95"]),
    )
    return table


def _method_text(cal: dict) -> str:
    """``temperature T = 0.812, stored`` / ``vector scaling, fitted here``."""
    method = cal.get("method") or "temperature"
    text = f"T = {cal['temperature']:.3f}" if cal.get("temperature") else f"{method} scaling"
    return text + (", stored" if cal.get("stored") else ", fitted here")


def _trust_lines(metrics: dict) -> list[str]:
    """Calibration, operating points and OOD separation in one line each."""
    lines = []
    cal = metrics.get("calibration") or {}
    for when in ("before", "after"):
        if cal.get(when):
            m = cal[when]
            extra = f" ({_method_text(cal)})" if when == "after" else ""
            lines.append(
                f"calibration {when}{extra}: ECE {m['ece']:.3f} {_fmt_ci((m['ci95'] or {}).get('ece'))}"
                f", MCE {m['mce']:.3f}, Brier {m['brier']:.3f}, NLL {m['nll']:.3f}"
            )
    for p in metrics.get("operating_points") or []:
        lines.append(
            f"{p['spec']} (threshold {p['threshold']:.3g} on val): sensitivity "
            f"{_fmt(p['sensitivity'])} {_fmt_ci(p['sensitivity_ci95'])}, specificity "
            f"{_fmt(p['specificity'])} {_fmt_ci(p['specificity_ci95'])}"
        )
    ood = metrics.get("ood")
    for name, v in ((ood or {}).get("scores") or {}).items():
        lines.append(
            f"OOD {name} vs {ood['data']}: AUROC {v['auroc']:.3f}, "
            f"FPR at 95 % recall {v['fpr_at_95_recall']:.3f}"
        )
    flag = (ood or {}).get("flag")
    if flag:
        lines.append(
            f"OOD flag ({flag['score']} below {flag['threshold']:.3g}, chosen on validation): "
            f"{flag['ood_flagged']:.1%} of {ood['data']} flagged, {flag['in_flagged']:.1%} of "
            "the evaluated images"
        )
    if (ood or {}).get("note"):
        lines.append(f"note: {ood['note']}")
    return lines


def print_summary(metrics: dict) -> None:
    """A compact table of ``metrics.json``: per class (or the task), then the notes."""
    table = _task_table(metrics) if metrics.get("task") else _class_table(metrics)
    console.console.print(table)
    for line in _trust_lines(metrics):
        console.console.print(f"  {line}")
    for part in subgroup_report(metrics.get("subgroups")):
        console.console.print(part)
    for note in metrics.get("notes", []):
        console.console.print(f"  note: {note}")


# --- commands -------------------------------------------------------------------------------


def _ood_data(spec: str | None, *, workspace: Path) -> Dataset | None:
    """``--ood-data SPEC`` loaded; its labels are not used."""
    if spec is None:
        return None
    try:
        return load_dataset(spec, workspace=workspace)
    except ZooError as exc:
        raise ZooError(f"--ood-data {spec}: {exc}") from None


def evaluate_command(
    target_name: str,
    *,
    workspace: Path,
    data: str | None = None,
    images: str | None = None,
    label_map: str | Path | None = None,
    ood_data: str | None = None,
    **settings,
) -> int:
    """``zoo evaluate TARGET …``: the settings of :func:`evaluate_target` (``label_map`` and
    ``ood_data`` as given on the command line: a file and a data spec) are checked first, so
    that a bad one fails before the data is loaded; then the target, data and scoring."""
    from zoo.inference.tta import parse_tta
    from zoo.scoring.operating_points import parse_operating_point

    if settings.get("tta") is not None:
        settings["tta"] = parse_tta(settings["tta"]).spec
    check_task(settings.get("task"))
    check_bootstrap(settings.get("bootstrap", 1000))
    labels = read_label_map(label_map) if label_map else None
    if settings.get("out"):  # refused before any work when zoo may not replace it
        _checked_out(Path(settings["out"]), workspace=workspace)
    target = resolve_target(target_name, workspace)
    for text in settings.get("operating_points", ()):
        parse_operating_point(text, target.classes)
    prior_settings(
        target,
        prior_correction=settings.get("prior_correction"),
        target_priors=settings.get("target_priors"),
    )
    dataset = load_evaluation_data(target, data, workspace=workspace, images=images)
    for note in dataset.notes:
        console.info(f"  note: {note}")
    out = evaluate_target(
        target,
        dataset,
        label_map=labels,
        ood_data=_ood_data(ood_data, workspace=workspace),
        workspace=workspace,
        **settings,
    )
    if not console.is_quiet():
        print_summary(EvaluationRecord.load(out / METRICS_FILE).to_dict())
    console.info(f"Wrote {out}")
    return 0
