"""Figures for ``zoo evaluate`` and ``zoo leaderboard``: ROC, sensitivity–specificity (Esteva
et al. 2017, Fig. 3), confusion matrix, a bar chart with intervals and a forest plot.

Each function writes a PNG atomically (temporary file in the same folder, then ``os.replace``)
and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import auc as curve_area  # noqa: E402

from zoo.errors import ZooError  # noqa: E402
from zoo.scoring.metrics import roc_table  # noqa: E402
from zoo.store.workspace import atomic_path  # noqa: E402

DPI = 120


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Write the figure through zoo.store's atomic writer (the user's umask applies)."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp, open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_roc(
    truth: pd.DataFrame, predictions: pd.DataFrame, path: str | os.PathLike, *, title: str
) -> Path:
    """One ROC curve per class (classes with positives and negatives), AUC in the legend."""
    table = roc_table(truth, predictions)
    fig, ax = plt.subplots(figsize=(6, 6))
    for cls, g in table.groupby("class", sort=False):
        fpr, tpr = g["fpr"].to_numpy(), g["tpr"].to_numpy()
        ax.plot(fpr, tpr, lw=1.5, label=f"{cls} (AUC {curve_area(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title(title)
    ax.set_aspect("equal")
    if len(table):
        ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_sens_spec(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], float | None]],
    path: str | os.PathLike,
    *,
    title: str,
    operating_points: Mapping[str, tuple[float, float]] | None = None,
    chosen_points: Mapping[str, tuple[str, float, float]] | None = None,
) -> Path:
    """Sensitivity (y) against specificity (x), as in Esteva et al. 2017, Fig. 3.

    ``curves``: name → ``(sensitivity, specificity, auc)``; ``operating_points``: name →
    ``(sensitivity, specificity)`` at threshold 0.5, drawn as a marker on the curve's colour;
    ``chosen_points``: label → ``(curve name, sensitivity, specificity)`` of thresholds chosen
    on validation, drawn as labelled stars.
    """
    fig, ax = plt.subplots(figsize=(6, 6))
    colours = {}
    for name, (sens, spec, auc) in curves.items():
        sens, spec = np.asarray(sens, dtype=float), np.asarray(spec, dtype=float)
        if sens.shape != spec.shape:
            raise ZooError(
                f"curve {name!r}: sensitivity has {sens.size} points but specificity "
                f"{spec.size}; give matching arrays."
            )
        label = name if auc is None else f"{name} (AUC {auc:.3f})"
        (line,) = ax.plot(spec, sens, lw=1.5, label=label)
        colours[name] = line.get_color()
    for name, (sens, spec) in (operating_points or {}).items():
        ax.plot(
            spec,
            sens,
            marker="o",
            ms=7,
            ls="none",
            mec="black",
            color=colours.get(name, "black"),
            label=f"{name} at 0.5" if name not in colours else None,
        )
    if operating_points:
        ax.plot([], [], marker="o", ls="none", color="white", mec="black", label="threshold 0.5")
    for label, (name, sens, spec) in (chosen_points or {}).items():
        ax.plot(
            spec,
            sens,
            marker="*",
            ms=13,
            ls="none",
            mec="black",
            color=colours.get(name, "black"),
            label=label,
        )
    ax.set(xlim=(0, 1.01), ylim=(0, 1.01), xlabel="Specificity", ylabel="Sensitivity")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    if curves or operating_points or chosen_points:
        ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_confusion(
    truth_labels: Sequence[str],
    pred_labels: Sequence[str],
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    normalize: bool = True,
) -> Path:
    """Confusion matrix (rows: truth, columns: prediction), row-normalised by default.

    Predicted labels outside ``classes`` (e.g. "undecided") are left out; an unknown true
    label is an error.
    """
    classes = [str(c) for c in classes]
    truth_labels = [str(x) for x in truth_labels]
    pred_labels = [str(x) for x in pred_labels]
    if len(truth_labels) != len(pred_labels):
        raise ZooError(
            f"truth_labels has {len(truth_labels)} labels but pred_labels {len(pred_labels)}; "
            "give one prediction per image."
        )
    unknown = sorted(set(truth_labels) - set(classes))
    if unknown:
        raise ZooError(f"truth labels {unknown} are not among classes {classes}.")
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)))
    for t, p in zip(truth_labels, pred_labels, strict=True):
        if p in index:
            counts[index[t], index[p]] += 1
    values = counts
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    high = values.max() / 2 if values.size else 0
    for i in range(len(classes)):
        for j in range(len(classes)):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(values[i, j])}"
            colour = "white" if values[i, j] > high else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize="small")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="Predicted", ylabel="True")
    ax.set_title("Confusion matrix" + (" (row-normalised)" if normalize else ""))
    return _save(fig, path)


def plot_bars_with_ci(
    names: Sequence[str],
    values: Sequence[float],
    intervals: Sequence[tuple[float, float] | None],
    path: str | os.PathLike,
    *,
    xlabel: str,
) -> Path:
    """Horizontal bars (e.g. balanced accuracy per model) with interval whiskers, best on top."""
    if not (len(names) == len(values) == len(intervals)):
        raise ZooError(
            f"names, values and intervals must have the same length; received {len(names)}, "
            f"{len(values)} and {len(intervals)}."
        )
    order = np.argsort(np.asarray(values, dtype=float), kind="stable")
    names = [str(names[i]) for i in order]
    vals = np.asarray(values, dtype=float)[order]
    bounds = np.array([intervals[i] or (np.nan, np.nan) for i in order], dtype=float)
    bounds = bounds.reshape(len(order), 2)
    lo = np.nan_to_num(np.clip(vals - bounds[:, 0], 0, None))
    hi = np.nan_to_num(np.clip(bounds[:, 1] - vals, 0, None))
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.4 * len(names) + 1.2)))
    y = np.arange(len(names))
    ax.barh(y, vals, xerr=np.vstack([lo, hi]), color="tab:blue", alpha=0.8, capsize=3)
    ax.set_yticks(y, names)
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, max(1.0, float((vals + hi).max()) if len(vals) else 1.0))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_roc_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], float | None]],
    path: str | os.PathLike,
    *,
    title: str,
) -> Path:
    """Several ROC curves in one figure (e.g. the melanoma ROC of the top entries).

    ``curves``: name → ``(fpr, tpr, auc)``.
    """
    fig, ax = plt.subplots(figsize=(6, 6))
    for name, (fpr, tpr, auc) in curves.items():
        label = name if auc is None else f"{name} (AUC {auc:.3f})"
        ax.plot(np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float), lw=1.5, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title(title)
    ax.set_aspect("equal")
    if curves:
        ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_reliability(
    tables: Mapping[str, pd.DataFrame],
    path: str | os.PathLike,
    *,
    title: str,
    block: Mapping,
    n: int,
) -> Path:
    """Reliability diagram (accuracy against confidence per bin) above the confidence
    histogram; ``tables``: ``before``/``after`` from ``calibration.reliability_table``."""
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    styles = {"before": dict(color="tab:orange"), "after": dict(color="tab:blue")}
    for name, table in tables.items():
        ece = block[name]["ece"]
        width = table["high"] - table["low"]
        label = f"{name} calibration (ECE {ece:.3f})"
        if name == "after" and block.get("temperature") is not None:
            label += f", T = {block['temperature']:.2f}"
        alpha = 0.35 if name == "before" and "after" in tables else 0.7
        top.bar(
            table["low"],
            table["accuracy"].fillna(0),
            width=width,
            align="edge",
            alpha=alpha,
            edgecolor="black",
            lw=0.5,
            label=label,
            **styles[name],
        )
        bottom.bar(
            table["low"],
            table["n"],
            width=width,
            align="edge",
            alpha=alpha,
            edgecolor="black",
            lw=0.5,
            **styles[name],
        )
    top.set(xlim=(0, 1), ylim=(0, 1.01), ylabel="Accuracy of the top class")
    top.set_title(f"{title}\nreliability, n = {n}, {len(next(iter(tables.values())))} bins")
    top.legend(loc="upper left", fontsize="small")
    top.grid(alpha=0.3)
    bottom.set(xlabel="Confidence (top-class probability)", ylabel="Images")
    return _save(fig, path)


def plot_overlay(
    image: np.ndarray, heat: np.ndarray, path: str | os.PathLike, *, title: str
) -> Path:
    """The image (RGB, 0–255) beside the same image under the map (``heat``, any scale)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4.3))
    pixels = np.clip(np.asarray(image, dtype=float) / 255.0, 0, 1)
    for ax in (left, right):
        ax.imshow(pixels)
        ax.axis("off")
    right.imshow(np.asarray(heat, dtype=float), cmap="inferno", alpha=0.6)
    left.set_title("image", fontsize="small")
    right.set_title("map (brighter: more influence)", fontsize="small")
    fig.suptitle(title, fontsize="medium")
    return _save(fig, path)


def plot_embedding(frame: pd.DataFrame, path: str | os.PathLike, *, title: str) -> Path:
    """2-D points (``x``, ``y``) coloured by ``truth``, one legend entry per class."""
    fig, ax = plt.subplots(figsize=(7, 6))
    for cls, group in frame.groupby("truth", sort=True):
        ax.scatter(group["x"], group["y"], s=14, alpha=0.8, label=f"{cls} (n = {len(group)})")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize="small", markerscale=1.5)
    return _save(fig, path)


FOREST_COLUMNS = ("row", "panel", "value", "low", "high")


def plot_forest(
    table: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str,
    reference: Mapping[str, float | None] | None = None,
) -> Path:
    """A forest plot: one row per ``row`` of ``table`` (top to bottom in order of appearance),
    one panel per ``panel``, each value a point with its interval (``low``, ``high``; NaN where
    there is none). A missing value reads "n/a". ``reference``: a dashed line per panel (e.g.
    the value on all images)."""
    missing = [c for c in FOREST_COLUMNS if c not in table.columns]
    if missing or table.empty:
        raise ZooError(
            f"plot_forest needs a non-empty table with columns {', '.join(FOREST_COLUMNS)}; "
            f"received {len(table)} rows, missing {missing}."
        )
    rows = list(dict.fromkeys(table["row"]))
    panels = list(dict.fromkeys(table["panel"]))
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(2.6 * len(panels) + 2.5, 0.3 * len(rows) + 1.5),
        sharey=True,
        squeeze=False,
    )
    position = {r: i for i, r in enumerate(rows)}
    for ax, panel in zip(axes[0], panels, strict=True):
        _forest_panel(ax, table[table["panel"] == panel], position)
        line = (reference or {}).get(panel)
        if line is not None and np.isfinite(line):
            ax.axvline(line, ls="--", color="grey", lw=0.8)
        ax.set_title(str(panel), fontsize="medium")
    axes[0][0].set_yticks(range(len(rows)), [str(r) for r in rows], fontsize="small")
    axes[0][0].set_ylim(len(rows) - 0.5, -0.5)
    fig.suptitle(title, fontsize="medium")
    return _save(fig, path)


def _forest_panel(ax, part: pd.DataFrame, position: Mapping) -> None:
    """The points and intervals of one panel; "n/a" where a value is missing."""
    y = part["row"].map(position).to_numpy(dtype=float)
    value, low, high = (part[c].to_numpy(dtype=float) for c in ("value", "low", "high"))
    shown = np.isfinite(value)
    err = np.vstack([np.clip(value - low, 0, None), np.clip(high - value, 0, None)])
    err = np.nan_to_num(err)[:, shown]
    ax.errorbar(value[shown], y[shown], xerr=err, fmt="o", ms=4, capsize=2, color="tab:blue")
    for row in y[~shown]:
        ax.text(0.5, row, "n/a", ha="center", va="center", color="grey", fontsize="small")
    ax.set_xlim(-0.02, 1.02)
    ax.grid(axis="x", alpha=0.3)
