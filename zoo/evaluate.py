"""``zoo evaluate`` and ``zoo predict``: score a member or ensemble and write the evidence.

:func:`evaluate_target` is the library call (the CLI, the leaderboard and the benchmark
scripts use it). It writes, in its output folder:

- ``truth.csv`` and ``predictions.csv`` in ISIC format, rows sorted by image id (the official
  scorer applies ``score_weight`` by position after sorting the truth), ``image`` first, then
  the target's classes in its order; ``truth.csv`` has ``score_weight`` when the data has it;
- ``metrics.json``: ``zoo.metrics.score`` of exactly those two files (the shape of
  ``isic_challenge_scoring.ClassificationScore.to_dict(rocs=False)``), ``ci95`` (bootstrap over
  lesions), the task block of ``--task``, and the settings, data and timing behind them;
- ``roc.csv``/``roc.png``, ``sens_spec.csv``/``sens_spec.png`` and ``confusion.png``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from zoo import console
from zoo.data import Dataset, load_dataset
from zoo.data.dataset import safe_name
from zoo.data.sources import IMAGE_EXTENSIONS
from zoo.errors import ZooError, close_matches
from zoo.metrics import argmax_labels, bootstrap_ci, operating_points, roc_table, score
from zoo.metrics import sens_spec_curves as class_curves
from zoo.targets import Target, resolve_target
from zoo.taxonomy import TASKS, score_task, task_scores
from zoo.workspace import atomic_write_csv, atomic_write_json, atomic_write_text

SPLITS = ("test", "val", "all")
BOOTSTRAP_SEED = 0


# --- checks ---------------------------------------------------------------------------------


def check_task(task: str | None) -> None:
    if task is not None and task not in TASKS:
        raise ZooError(
            f"unknown --task {task!r}; choose one of {', '.join(TASKS)}.{close_matches(task, list(TASKS))}"
        )


def check_bootstrap(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ZooError(f"--bootstrap must be a whole number >= 0 (0 = no intervals); got {n!r}.")


def read_label_map(path: str | Path) -> dict[str, str]:
    """A ``{"source label": "model class"}`` JSON file."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text())
    except OSError as exc:
        raise ZooError(f"--label-map {path}: cannot read it ({exc.strerror or exc}).") from None
    except json.JSONDecodeError as exc:
        raise ZooError(f"--label-map {path}: not valid JSON ({exc}).") from None
    return _checked_mapping(mapping, where=f"--label-map {path}")


def _checked_mapping(mapping, *, where: str = "label_map") -> dict[str, str]:
    if not isinstance(mapping, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ZooError(
            f'{where} must be a JSON object of strings {{"source label": "model class"}}; '
            f"got {mapping!r}."
        )
    return {k.strip(): v.strip() for k, v in mapping.items()}


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


def apply_label_map(
    dataset: Dataset,
    mapping: Mapping[str, str] | None,
    classes: Sequence[str],
    *,
    ignore_unmapped: bool = False,
) -> Dataset:
    """``dataset`` relabelled onto the model's ``classes``.

    A label is kept if it is a class (or one up to case), else translated by ``mapping``. Map
    targets must be classes. Images with other labels are an error that lists those labels,
    or are dropped with a note when ``ignore_unmapped``.
    """
    classes = [str(c) for c in classes]
    mapping = _checked_mapping(mapping or {})
    bad = sorted({v for v in mapping.values() if v not in classes})
    if bad:
        raise ZooError(
            f"label map target(s) {', '.join(map(repr, bad))} are not classes of the model; "
            f"map onto one of {', '.join(classes)}."
        )
    labels = dataset.records["label"].astype(str)
    lookup, notes = _label_lookup(labels.unique(), mapping, classes)
    mapped = labels.map(lookup)
    unmapped = mapped.isna().to_numpy()
    if unmapped.any():
        counts = labels[unmapped].value_counts().sort_index()
        listed = ", ".join(f"{label!r} ({n} images)" for label, n in counts.items())
        if not ignore_unmapped:
            raise ZooError(
                f"label(s) {listed} of {dataset.spec} are not classes of the model "
                f"({', '.join(classes)}); map them with --label-map FILE "
                '(JSON {"source label": "model class"}) or drop them with --ignore-unmapped.'
            )
        notes.append(f"dropped {int(unmapped.sum())} image(s) with unmapped label(s) {listed}")
    keep = ~unmapped
    if not keep.any():
        raise ZooError(f"no image of {dataset.spec} is left after mapping its labels.")
    records = dataset.records.loc[keep].assign(label=mapped[keep].to_numpy())
    weights = None if dataset.weights is None else dataset.weights.loc[records.index]
    return dataclasses.replace(
        dataset,
        records=records,
        classes=tuple(classes),
        weights=weights,
        notes=[*dataset.notes, *notes],
    )


def _label_lookup(labels, mapping: dict[str, str], classes: list[str]):
    lower = {c.lower(): c for c in classes}
    lookup, notes = {}, []
    for label in sorted(labels):
        if label in mapping:
            lookup[label] = mapping[label]
        elif label in classes:
            lookup[label] = label
        elif label.lower() in lower:
            lookup[label] = lower[label.lower()]
            notes.append(f"label {label!r} taken as class {lookup[label]!r} (same up to case)")
    return lookup, notes


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
    target: Target, dataset: Dataset, *, split, tta, prior_correction, task, workspace
) -> Path:
    """``<workspace>/evaluations/<target>-<data>-<split>[-<tta>][-raw][-<task>]``."""
    name = f"{target.name}-{safe_name(dataset.name)}-{split}"
    name += "" if tta.kind == "none" else f"-{tta.name}"
    name += "" if prior_correction else "-raw"
    name += f"-{task}" if task else ""
    return Path(workspace) / "evaluations" / name


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


def _groups(dataset: Dataset, ids: pd.Index) -> pd.Series | None:
    """Lesion of each image, or ``None`` when every image is its own lesion."""
    groups = dataset.records.loc[ids, "group"].astype(str)
    return None if (groups.to_numpy() == ids.to_numpy().astype(str)).all() else groups


def _class_files(out: Path, truth, predictions, *, title: str) -> None:
    from zoo.plots import plot_confusion, plot_roc, plot_sens_spec

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


def _task_block(truth, predictions, task, *, groups, bootstrap, out: Path, title: str) -> dict:
    """Esteva's binary task: AUC with interval, sens/spec at 0.5, the curve, files."""
    from zoo.plots import plot_confusion, plot_roc, plot_sens_spec

    result = score_task(truth, predictions, task)
    y, s, ids = task_scores(truth, predictions, task)
    binary_truth = pd.DataFrame({"malignant": y, "benign": 1 - y}, index=ids, dtype=float)
    binary = pd.DataFrame({"malignant": s, "benign": 1 - s}, index=ids)
    result["positive_classes"], result["negative_classes"] = _task_sides(truth.columns, task)
    result["auc_ci95"] = None
    if bootstrap and result["auc"] is not None:
        g = None if groups is None else groups.loc[ids]
        ci = bootstrap_ci(
            binary_truth, binary, groups=g, n_resamples=bootstrap, seed=BOOTSTRAP_SEED
        )
        result["auc_ci95"] = ci["auc"]["malignant"]
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
    from zoo.taxonomy import task_columns

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
    out: str | Path | None = None,
    workspace: Path,
) -> Path:
    """Score ``target`` on ``split`` of ``dataset``; write the files; return the folder.

    ``None`` means the default: split ``test`` on the target's training data and ``all``
    elsewhere; the target's TTA and prior correction (members: none, on); the folder
    ``<workspace>/evaluations/<target>-<data>-<split>[-<tta>][-raw][-<task>]``.
    """
    from zoo.tta import parse_tta

    scheme = parse_tta(tta if tta is not None else target.default_tta)
    correct = target.default_prior_correction if prior_correction is None else prior_correction
    check_task(task)
    check_bootstrap(bootstrap)
    split = resolve_split(target, dataset, split)
    evaluated = apply_label_map(
        dataset.subset(split_ids(target, dataset, split)),
        label_map,
        target.classes,
        ignore_unmapped=ignore_unmapped,
    )
    start = time.perf_counter()
    probs = target.probabilities(
        dataset, evaluated.ids, tta=scheme.spec, prior_correction=correct, workspace=workspace
    )
    timing = _timing(probs, seconds=time.perf_counter() - start, images=len(evaluated))
    truth, probs, weights = _aligned(evaluated, probs, task)
    if out is None:
        out = default_out(
            target,
            dataset,
            split=split,
            tta=scheme,
            prior_correction=correct,
            task=task,
            workspace=workspace,
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truth, probs, weights = _write_scored(out, truth, probs, weights)
    title = f"{target.name} on {dataset.name} ({split})"
    metrics = _metrics(
        truth,
        probs,
        weights,
        groups=_groups(evaluated, truth.index),
        task=task,
        bootstrap=bootstrap,
        out=out,
        title=title,
    )
    metrics["notes"] = _notes(evaluated, metrics, weighted=weights is not None, task=task)
    settings = {
        "split": split,
        "tta": scheme.spec,
        "prior_correction": bool(correct),
        "label_map": dict(label_map) if label_map else None,
        "ignore_unmapped": ignore_unmapped,
        "bootstrap": {"n_resamples": bootstrap, "seed": BOOTSTRAP_SEED},
    }
    metrics.update(_record(target, dataset, settings, timing))
    atomic_write_json(out / "metrics.json", metrics)
    return out


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
    """Official scores, class counts, bootstrap intervals, the task block, curves and plots."""
    metrics = score(truth, probs, weights=weights)
    metrics["class_counts"] = {c: int(v) for c, v in truth.sum(axis=0).items()}
    metrics["ci95"] = None
    if bootstrap:
        metrics["ci95"] = bootstrap_ci(
            truth, probs, groups=groups, n_resamples=bootstrap, seed=BOOTSTRAP_SEED
        )
    metrics["task"] = None
    if not task:
        _class_files(out, truth, probs, title=title)
        return metrics
    metrics["task"] = _task_block(
        truth, probs, task, groups=groups, bootstrap=bootstrap, out=out, title=title
    )
    if metrics["ci95"] is not None:
        metrics["ci95"]["task_auc"] = metrics["task"]["auc_ci95"]
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
    for column in ("class", "n", "sens.", "spec.", "AUC", "95 % CI"):
        table.add_column(column, justify="left" if column == "class" else "right")
    per = metrics["per_category"]
    for c in metrics["classes"]:
        table.add_row(
            c,
            str(metrics["class_counts"][c]),
            _fmt(per["sensitivity"][c]),
            _fmt(per["specificity"][c]),
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


def print_summary(metrics: dict) -> None:
    """A compact table of ``metrics.json``: per class (or the task), then the notes."""
    table = _task_table(metrics) if metrics.get("task") else _class_table(metrics)
    console.console.print(table)
    for note in metrics.get("notes", []):
        console.console.print(f"  note: {note}")


# --- commands -------------------------------------------------------------------------------


def evaluate_command(args, workspace: Path) -> int:
    """``zoo evaluate TARGET …``: options checked first, then the target, data and scoring."""
    from zoo.tta import parse_tta

    tta = parse_tta(args.tta).spec if args.tta is not None else None
    check_task(args.task)
    check_bootstrap(args.bootstrap)
    label_map = read_label_map(args.label_map) if args.label_map else None
    target = resolve_target(args.target, workspace)
    dataset = load_evaluation_data(target, args.data, workspace=workspace, images=args.images)
    for note in dataset.notes:
        console.info(f"  note: {note}")
    out = evaluate_target(
        target,
        dataset,
        split=args.split,
        tta=tta,
        prior_correction=False if args.no_prior_correction else None,
        label_map=label_map,
        ignore_unmapped=args.ignore_unmapped,
        task=args.task,
        bootstrap=args.bootstrap,
        out=args.out,
        workspace=workspace,
    )
    if not console.is_quiet():
        print_summary(json.loads((out / "metrics.json").read_text()))
    console.console.print(f"Wrote {out}")
    return 0


def collect_images(paths: Sequence[str]) -> list[Path]:
    """Image files named directly, and the images (jpg, png, …) under folders, recursively."""
    files: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            files += sorted(
                f
                for f in path.rglob("*")
                if f.suffix.lower() in IMAGE_EXTENSIONS
                and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise ZooError(
                f"{text}: no such file or folder; pass image files or folders of images."
            )
    unique = list(dict.fromkeys(f.resolve() for f in files))
    if not unique:
        raise ZooError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(paths)}; "
            "pass image files or folders that hold some."
        )
    return unique


def predict_command(args, workspace: Path) -> int:
    """``zoo predict TARGET PATH…``: ISIC CSV of class probabilities to --out or stdout."""
    from zoo.tta import parse_tta

    tta = parse_tta(args.tta).spec if args.tta is not None else None
    target = resolve_target(args.target, workspace)
    files = collect_images(args.paths)
    to_stdout = args.out is None
    was_quiet = console.is_quiet()
    console.set_quiet(was_quiet or to_stdout)  # keep progress bars out of the CSV
    try:
        frame = target.predict_files(
            files,
            tta=tta or target.default_tta,
            prior_correction=False if args.no_prior_correction else target.default_prior_correction,
        )
    finally:
        console.set_quiet(was_quiet)
    text = frame.rename_axis("image").to_csv()
    if to_stdout:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(Path(args.out), text)
        console.info(f"Wrote {len(frame)} rows to {args.out}")
    return 0
