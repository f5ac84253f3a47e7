"""Esteva et al. 2017 binary tasks on a small taxonomy (``taxonomy.toml``).

A multi-class model answers a binary question (e.g. melanoma vs nevus) by summing the
probabilities of the classes under each answer, as the paper sums over a node's descendants:
``score = sum(p[malignant classes]) / sum(p[all classes of the task])``. The same file names
each class code in full (:func:`class_name`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from zoo.errors import ZooError
from zoo.scoring.metrics import THRESHOLD, align

TAXONOMY_FILE = Path(__file__).with_name("taxonomy.toml")


@dataclass(frozen=True)
class Task:
    """A binary task: lower-case class names on each side."""

    name: str
    title: str
    malignant: tuple[str, ...]
    benign: tuple[str, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.malignant + self.benign


def load_tasks(path: Path = TAXONOMY_FILE) -> dict[str, Task]:
    """Read the tasks of a taxonomy TOML file (``[nodes.*]`` and ``[tasks.*]`` tables)."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    nodes = data.get("nodes", {})
    tasks = {}
    for name, spec in data.get("tasks", {}).items():
        unknown = [n for n in spec["nodes"] if n not in nodes]
        if unknown:
            raise ZooError(f"{path}: task {name!r} names unknown nodes {unknown}.")
        malignant = [c.lower() for n in spec["nodes"] for c in nodes[n].get("malignant", [])]
        benign = [c.lower() for n in spec["nodes"] for c in nodes[n].get("benign", [])]
        tasks[name] = Task(name, spec.get("title", name), tuple(malignant), tuple(benign))
    return tasks


TASKS: dict[str, Task] = load_tasks()


def load_class_names(path: Path = TAXONOMY_FILE) -> dict[str, str]:
    """``{lower-case class code: full name}`` from the ``[names]`` table."""
    with open(path, "rb") as f:
        return {code.lower(): name for code, name in tomllib.load(f).get("names", {}).items()}


CLASS_NAMES: dict[str, str] = load_class_names()


def class_name(code: str) -> str:
    """The full name of a class code (``mel`` → Melanoma, matched case-insensitively), else
    the code itself."""
    return CLASS_NAMES.get(str(code).lower(), str(code))


def _task(task: str) -> Task:
    if task not in TASKS:
        raise ZooError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    return TASKS[task]


def task_columns(columns: pd.Index | list[str], task: str) -> tuple[list[str], list[str]]:
    """The data's columns on the malignant and on the benign side of ``task``."""
    spec = _task(task)
    columns = list(columns)
    malignant = [c for c in columns if str(c).lower() in spec.malignant]
    benign = [c for c in columns if str(c).lower() in spec.benign]
    if not malignant and not benign:
        raise ZooError(
            f"task {task!r} needs some of the classes {list(spec.classes)} but the data has "
            f"{[str(c) for c in columns]}; map labels with --label-map or pick another task."
        )
    return malignant, benign


def task_scores(
    truth: pd.DataFrame, predictions: pd.DataFrame, task: str
) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Binary truth, malignancy score and kept image ids for ``task``.

    Keeps the images whose true class belongs to the task. ``y_true`` is 1 for a malignant
    true class; ``score`` is the malignant share of the probability the model gives the task's
    classes (0.5 where it gives them no probability at all).
    """
    malignant, benign = task_columns(truth.columns, task)
    t, p = align(truth, predictions)
    true_class = t.columns[t.to_numpy().argmax(axis=1)]
    keep = np.asarray(true_class.isin(malignant + benign))
    y_true = np.asarray(true_class[keep].isin(malignant), dtype=int)
    mass_malignant = p.loc[keep, malignant].to_numpy().sum(axis=1)
    mass_all = mass_malignant + p.loc[keep, benign].to_numpy().sum(axis=1)
    score = np.divide(
        mass_malignant, mass_all, out=np.full(mass_all.shape, 0.5), where=mass_all > 0
    )
    return y_true, score, t.index[keep]


def score_task(truth: pd.DataFrame, predictions: pd.DataFrame, task: str) -> dict:
    """AUC, counts, sensitivity and specificity at ``score > 0.5``, and the sens–spec curve.

    Values that need images of a kind the data lacks are ``None``; the curve is empty then.
    Curve thresholds start at ``None`` (nothing predicted malignant).
    """
    y, s, _ = task_scores(truth, predictions, task)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    pred = s > THRESHOLD
    result = {
        "task": task,
        "title": TASKS[task].title,
        "n_positive": n_pos,
        "n_negative": n_neg,
        "auc": None,
        "threshold": THRESHOLD,
        "sensitivity": float(pred[y == 1].mean()) if n_pos else None,
        "specificity": float((~pred[y == 0]).mean()) if n_neg else None,
        "curve": {"sensitivity": [], "specificity": [], "threshold": []},
    }
    if n_pos and n_neg:
        result["auc"] = float(roc_auc_score(y, s))
        fpr, tpr, thr = roc_curve(y, s)
        result["curve"] = {
            "sensitivity": tpr.tolist(),
            "specificity": (1 - fpr).tolist(),
            "threshold": [float(x) if np.isfinite(x) else None for x in thr],
        }
    return result
