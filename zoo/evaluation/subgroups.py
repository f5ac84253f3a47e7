"""Subgroup performance of an evaluation, reported as a clinical study reports it: the
``subgroups`` section of ``metrics.json``, the table in ``zoo evaluate``'s report and
``subgroups.png``.

For each variable the evaluated images carry (:data:`zoo.data.dataset.METADATA_COLUMNS`: sex;
age in bands; anatomical site, rare sites grouped as ``other``; how the diagnosis was
confirmed) and each of its subgroups: images and lesions, balanced accuracy, melanoma AUC, and
melanoma sensitivity and specificity at the evaluation's melanoma operating point (chosen on
validation; else the argmax call), each with a lesion-bootstrap interval. Per variable and
metric, the largest gap between two subgroups, with the interval of that difference on the
same resamples. Subgroups too small to say anything get a note instead of numbers. Every key
is described in ``docs/formats.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from rich.table import Table

from zoo.data.metadata import UNKNOWN, age_years, sex_values, text_values
from zoo.scoring.metrics import argmax_labels, bootstrap_statistics
from zoo.scoring.operating_points import SERVED_POINT, parse_operating_point

FORMAT_VERSION = 1
MELANOMA = "mel"
METRICS = {
    "balanced_accuracy": "balanced accuracy",
    "mel_auc": "melanoma AUC",
    "mel_sensitivity": "melanoma sensitivity",
    "mel_specificity": "melanoma specificity",
}
SHORT = ("bal. acc.", "mel AUC", "mel sens.", "mel spec.")  # the report's column heads
LEVEL = 0.95
MIN_LESIONS = 10  # below: nothing reported for the subgroup
MIN_MELANOMA_LESIONS = 10  # below: no melanoma AUC or sensitivity
MIN_OTHER_LESIONS = 10  # lesions without melanoma; below: no melanoma AUC or specificity
RARE_SITE_IMAGES = 30  # a site with fewer images, or fewer lesions, joins "other"
RARE_SITE_LESIONS = 10
OTHER = "other"
AGE_BANDS = ("<30", "30-49", "50-69", ">=70")
AGE_EDGES = (-np.inf, 30, 50, 70, np.inf)
# how a diagnosis was confirmed: HAM10000's dx_type and the ISIC archive's wording
CONFIRMATIONS = (
    ("histo", "histopathology"),
    ("follow", "follow-up"),
    ("serial imaging", "follow-up"),
    ("confocal", "confocal"),
    ("consensus", "consensus"),
)
ORDER = {
    "sex": ("female", "male"),
    "age": AGE_BANDS,
    "confirmation": ("histopathology", "follow-up", "consensus", "confocal"),
}


# --- subgroups ------------------------------------------------------------------------------


def _age(values: pd.Series) -> pd.Series:
    years = age_years(values)
    bands = pd.cut(years, bins=list(AGE_EDGES), right=False, labels=list(AGE_BANDS))
    return bands.astype(object).where(years.notna(), UNKNOWN)


def _confirmation(values: pd.Series) -> pd.Series:
    return text_values(values).map(lambda v: next((n for k, n in CONFIRMATIONS if k in v), v))


def _site(values: pd.Series, lesions: pd.Series) -> tuple[pd.Series, dict[str, int]]:
    """Sites with fewer than :data:`RARE_SITE_IMAGES` images or :data:`RARE_SITE_LESIONS`
    lesions become ``other``; returns the sites and ``{rare site: images}``."""
    site = text_values(values)
    known = site[site != UNKNOWN]
    images = known.value_counts()
    lesion_counts = lesions.loc[known.index].groupby(known).nunique()
    rare = {
        str(s): int(n)
        for s, n in images.items()
        if n < RARE_SITE_IMAGES or lesion_counts[s] < RARE_SITE_LESIONS
    }
    return site.where(~site.isin(list(rare)), OTHER), rare


def subgroup_labels(
    metadata: pd.DataFrame, lesions: pd.Series
) -> tuple[dict[str, pd.Series], dict[str, int]]:
    """Each image's subgroup per variable that ``metadata`` (the data set's metadata columns,
    indexed by image id) holds with at least one known value; and the sites grouped as
    ``other`` with their images. ``lesions``: the lesion of each image."""
    readers = {"sex": sex_values, "age": _age, "confirmation": _confirmation}
    labels, rare = {}, {}
    for column in ("sex", "age", "site", "confirmation"):
        if column not in metadata.columns:
            continue
        if column == "site":
            values, rare = _site(metadata[column], lesions)
        else:
            values = readers[column](metadata[column])
        if (values != UNKNOWN).any():
            labels[column] = values
    return labels, rare


def _ordered(variable: str, values: pd.Series) -> list[str]:
    """The subgroups in reading order: the usual order (sites: most images first), then the
    rest alphabetically, then ``other`` and ``unknown``."""
    counts = values.value_counts()
    known = [n for n in ORDER.get(variable, ()) if n in counts.index]
    ranked = sorted(counts.index, key=lambda n: (-counts[n], n) if variable == "site" else n)
    rest = [n for n in ranked if n not in known and n not in (OTHER, UNKNOWN)]
    return known + rest + [n for n in (OTHER, UNKNOWN) if n in counts.index]


# --- what is scored -------------------------------------------------------------------------


def melanoma_rule(classes: Sequence, operating_points: Sequence[Mapping] | None) -> dict | None:
    """How an image is called a melanoma: at the evaluation's melanoma operating point (the
    one zoo serves, ``mel:sensitivity>=0.9``, where it is there; else the first for ``mel``),
    else where ``mel`` is the top class; None without a ``mel`` class."""
    if MELANOMA not in [str(c) for c in classes]:
        return None
    points = [p for p in operating_points or () if p.get("class") == MELANOMA]
    served = parse_operating_point(SERVED_POINT).text
    point = next((p for p in points if p["spec"] == served), points[0] if points else None)
    if point is None:
        return {"class": MELANOMA, "rule": "argmax", "spec": None, "threshold": None}
    threshold = float(point["threshold"])
    return {
        "class": MELANOMA,
        "rule": "operating_point",
        "spec": point["spec"],
        "threshold": threshold,
    }


class Arrays(NamedTuple):
    """The evaluated images as arrays: one-hot truth, the truth where the argmax is right, and
    (with a melanoma class) melanoma truth, probability and call, as 0/1 floats."""

    onehot: np.ndarray
    hits: np.ndarray
    mel: np.ndarray | None = None
    score: np.ndarray | None = None
    called: np.ndarray | None = None


def scored_arrays(truth: pd.DataFrame, probs: pd.DataFrame, rule: dict | None) -> Arrays:
    """:class:`Arrays` of ``truth`` and ``probs`` (same images), melanoma called by ``rule``."""
    onehot = truth.to_numpy(dtype=float)
    values = probs.loc[truth.index, list(truth.columns)].to_numpy(dtype=float)
    predicted = argmax_labels(values)
    hits = onehot * (predicted == onehot.argmax(axis=1))[:, None]
    if rule is None:
        return Arrays(onehot, hits)
    k = [str(c) for c in truth.columns].index(MELANOMA)
    score = values[:, k]
    called = score >= rule["threshold"] if rule["rule"] == "operating_point" else predicted == k
    return Arrays(onehot, hits, onehot[:, k], score, called.astype(float))


def weighted_auc(counts: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The ROC AUC of ``score`` for 0/1 ``y`` per row of image ``counts`` (ties count one
    half; NaN without positives or negatives): the Mann–Whitney statistic, weighted."""
    order = np.argsort(score, kind="stable")
    ordered = score[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    c, yo = counts[:, order], y[order]
    pos = np.add.reduceat(c * yo, starts, axis=1)
    neg = np.add.reduceat(c * (1 - yo), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + neg / 2)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def metric_values(arrays: Arrays, mask: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` on the images of ``mask``, per row of ``counts`` (how
    often each image is drawn); NaN where undefined."""
    c = counts[:, mask]
    denom, num = c @ arrays.onehot[mask], c @ arrays.hits[mask]
    present = denom > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, num / np.where(present, denom, 1), 0.0)
        values = {"balanced_accuracy": recall.sum(axis=1) / present.sum(axis=1)}
        if arrays.mel is not None:
            y, call = arrays.mel[mask], arrays.called[mask]
            values["mel_auc"] = weighted_auc(c, y, arrays.score[mask])
            values["mel_sensitivity"] = c @ (y * call) / (c @ y)
            values["mel_specificity"] = c @ ((1 - y) * (1 - call)) / (c @ (1 - y))
    return values


# --- the section ----------------------------------------------------------------------------

ALL = ("all", "all")  # the key of every evaluated image together


class Measured(NamedTuple):
    """A subgroup's counts, the value of each metric, the metrics it reports and a note."""

    counts: dict
    point: dict
    wanted: list
    note: str | None


def reported(counts: Mapping[str, int]) -> tuple[list[str], str | None]:
    """The metrics a subgroup of these counts reports, and a note on what it leaves out."""
    if counts["n_lesions"] < MIN_LESIONS:
        return [], f"fewer than {MIN_LESIONS} lesions ({counts['n_lesions']}): nothing reported"
    if "n_melanoma" not in counts:
        return ["balanced_accuracy"], None
    left_out, why = set(), []
    if counts["n_melanoma_lesions"] < MIN_MELANOMA_LESIONS:
        left_out |= {"mel_auc", "mel_sensitivity"}
        why.append(
            f"fewer than {MIN_MELANOMA_LESIONS} melanoma lesions ({counts['n_melanoma_lesions']}): "
            "melanoma AUC and sensitivity not reported"
        )
    if counts["n_other_lesions"] < MIN_OTHER_LESIONS:
        left_out |= {"mel_auc", "mel_specificity"}
        why.append(
            f"fewer than {MIN_OTHER_LESIONS} lesions without melanoma "
            f"({counts['n_other_lesions']}): melanoma AUC and specificity not reported"
        )
    return [m for m in METRICS if m not in left_out], "; ".join(why) or None


def _measured(arrays: Arrays, mask: np.ndarray, lesions: pd.Series) -> Measured:
    """Images and lesions of a subgroup (all, with melanoma, without), its metrics on every
    image once, and what it reports."""
    counts = {"n_images": int(mask.sum()), "n_lesions": int(lesions[mask].nunique())}
    if arrays.mel is not None:
        mel = arrays.mel > 0.5
        counts["n_melanoma"] = int((mask & mel).sum())
        counts["n_melanoma_lesions"] = int(lesions[mask & mel].nunique())
        counts["n_other_lesions"] = int(lesions[mask & ~mel].nunique())
    values = metric_values(arrays, mask, np.ones((1, len(mask))))
    wanted, note = reported(counts)
    point = {m: float(values[m][0]) if m in wanted else None for m in METRICS}
    point = {m: None if v is None or np.isnan(v) else v for m, v in point.items()}
    return Measured(counts, point, wanted, note)


def _gap_pairs(measured: Mapping[tuple, Measured]) -> dict:
    """Per ``(variable, metric)`` with two or more subgroups (``unknown`` aside) that report
    it: the subgroups of the highest and of the lowest value."""
    pairs = {}
    for (variable, name), m in measured.items():
        if (variable, name) == ALL or name == UNKNOWN:
            continue
        for metric in m.wanted:
            if m.point[metric] is not None:
                pairs.setdefault((variable, metric), []).append((m.point[metric], name))
    return {key: (max(found)[1], min(found)[1]) for key, found in pairs.items() if len(found) >= 2}


def _statistic(arrays: Arrays, masks: Mapping, measured: Mapping, pairs: Mapping):
    """``counts → {key: values}`` for :func:`bootstrap_statistics`: each reported metric of each
    subgroup, ``(variable, name, metric)``, and each gap, ``(variable, None, metric)``."""

    def statistic(counts: np.ndarray) -> dict:
        values = {}
        for key, mask in masks.items():
            if measured[key].wanted:
                got = metric_values(arrays, mask, counts)
                values.update({(*key, m): got[m] for m in measured[key].wanted})
        for (variable, metric), (high, low) in pairs.items():
            gap = values[variable, high, metric] - values[variable, low, metric]
            values[variable, None, metric] = gap
        return values

    return statistic


def _entry(key: tuple, m: Measured, intervals: Mapping) -> dict:
    """One subgroup of the section: counts, each metric with its interval, the note."""
    entry = {"name": key[1], **m.counts}
    for metric in METRICS:
        entry[metric] = m.point[metric]
        entry[f"{metric}_ci95"] = (
            intervals.get((*key, metric)) if m.point[metric] is not None else None
        )
    entry["note"] = m.note
    return entry


def _variable(variable: str, measured: Mapping, pairs: Mapping, intervals: Mapping) -> dict:
    """A variable's block: its subgroups and, per metric, the largest gap (or None)."""
    gaps = {}
    for metric in METRICS:
        if (variable, metric) not in pairs:
            gaps[metric] = None
            continue
        high, low = pairs[variable, metric]
        value = measured[variable, high].point[metric] - measured[variable, low].point[metric]
        ci = intervals.get((variable, None, metric))
        gaps[metric] = {"value": float(value), "ci95": ci, "higher": high, "lower": low}
    entries = [_entry(k, m, intervals) for k, m in measured.items() if k[0] == variable]
    return {"subgroups": entries, "gaps": gaps}


def _settings(rule: dict | None, *, groups, n_resamples: int, seed: int, rare: dict) -> dict:
    """What the section was computed with: melanoma rule, bootstrap, minimums, notes."""
    notes = []
    if rule is None:
        notes.append("no mel class: melanoma AUC, sensitivity and specificity are null")
    elif rule["rule"] == "argmax":
        notes.append(
            "no melanoma operating point in this evaluation (it needs the target's validation "
            "split): melanoma is called where mel is the top class (argmax)"
        )
    if rare:
        shown = ", ".join(f"{s} ({n})" for s, n in rare.items())
        notes.append(f"rare sites grouped as other: {shown}")
    return {
        "format_version": FORMAT_VERSION,
        "metrics": list(METRICS),
        "melanoma": rule,
        "bootstrap": {
            "n_resamples": n_resamples,
            "seed": seed,
            "level": LEVEL,
            "unit": "image" if groups is None else "lesion",
        },
        "minimums": {
            "lesions": MIN_LESIONS,
            "melanoma_lesions": MIN_MELANOMA_LESIONS,
            "other_lesions": MIN_OTHER_LESIONS,
            "site_images": RARE_SITE_IMAGES,
            "site_lesions": RARE_SITE_LESIONS,
        },
        "other_sites": rare,
        "notes": notes,
    }


def subgroup_section(
    truth: pd.DataFrame,
    probs: pd.DataFrame,
    metadata: pd.DataFrame,
    *,
    groups: pd.Series | None,
    operating_points: Sequence[Mapping] | None,
    n_resamples: int,
    seed: int,
) -> dict | None:
    """The ``subgroups`` section of ``metrics.json`` for ``truth``/``probs`` (same images) and
    the images' ``metadata``; None when it has no variable with a known value. ``groups``:
    the lesion of each image (None: each image its own); intervals from ``n_resamples``
    lesion-bootstrap resamples (none with 0), the resamples of ``ci95`` with the same seed."""
    lesions = truth.index.to_series() if groups is None else groups.loc[truth.index]
    labels, rare = subgroup_labels(metadata.reindex(truth.index), lesions)
    if not labels:
        return None
    rule = melanoma_rule(truth.columns, operating_points)
    arrays = scored_arrays(truth, probs, rule)
    masks = {ALL: np.ones(len(truth), bool)}
    for variable, values in labels.items():
        masks.update({(variable, n): (values == n).to_numpy() for n in _ordered(variable, values)})
    measured = {key: _measured(arrays, mask, lesions) for key, mask in masks.items()}
    pairs = _gap_pairs(measured)
    intervals = {}
    if n_resamples:
        statistic = _statistic(arrays, masks, measured, pairs)
        intervals = bootstrap_statistics(
            truth.index, statistic, groups=groups, n_resamples=n_resamples, seed=seed, level=LEVEL
        )
    return {
        **_settings(rule, groups=groups, n_resamples=n_resamples, seed=seed, rare=rare),
        "overall": _entry(ALL, measured[ALL], intervals),
        "variables": {v: _variable(v, measured, pairs, intervals) for v in labels},
    }


# --- report and figure ----------------------------------------------------------------------


def _cell(value, interval) -> str:
    """``0.712 (0.65–0.77)``, ``0.712`` without an interval, ``–`` without a value."""
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" ({interval[0]:.2f}–{interval[1]:.2f})" if interval else "")


def melanoma_text(rule: dict | None) -> str:
    """How melanoma is called, in words."""
    if rule is None:
        return "no mel class"
    if rule["rule"] == "argmax":
        return "melanoma called by argmax (no operating point in this evaluation)"
    return f"melanoma called at {rule['spec']} (threshold {rule['threshold']:.3g}, chosen on val)"


def _rows(section: Mapping) -> list[tuple[str, dict]]:
    """``(variable, entry)`` of every image together, then of every subgroup."""
    rows = [("all", section["overall"])]
    for variable, block in section["variables"].items():
        rows += [(variable, entry) for entry in block["subgroups"]]
    return rows


def subgroup_table(section: Mapping | None) -> Table | None:
    """The report's table: one row per subgroup and one per variable's largest gaps."""
    if not section:
        return None
    table = Table(title=f"Subgroups · {melanoma_text(section['melanoma'])}", show_edge=False)
    for column in ("variable", "subgroup", "images", "lesions", *SHORT):
        table.add_column(column, justify="left" if column in ("variable", "subgroup") else "right")
    previous = None
    for variable, entry in _rows(section):
        if previous is not None and variable != previous:
            gaps = section["variables"].get(previous, {}).get("gaps") or {}
            _gap_row(table, gaps)
            table.add_section()
        cells = [_cell(entry[m], entry[f"{m}_ci95"]) for m in METRICS]
        first = variable if variable != previous else ""
        first, name = ("all images", "") if variable == "all" else (first, entry["name"])
        table.add_row(first, name, str(entry["n_images"]), str(entry["n_lesions"]), *cells)
        previous = variable
    _gap_row(table, section["variables"].get(previous, {}).get("gaps") or {})
    return table


def _gap_row(table: Table, gaps: Mapping) -> None:
    if any(gaps.values()):
        cells = [_cell(g["value"], g["ci95"]) if g else "–" for g in (gaps.get(m) for m in METRICS)]
        table.add_row("", "largest gap", "", "", *cells, style="italic")


def subgroup_lines(section: Mapping | None) -> list[str]:
    """The gaps whose interval excludes zero, and the notes of small subgroups, one line each."""
    overall = (section or {}).get("overall") or {}
    lines = [f"all images: {overall['note']}"] if overall.get("note") else []
    for variable, block in (section or {}).get("variables", {}).items():
        for metric, gap in block["gaps"].items():
            if gap and gap["ci95"] and gap["ci95"][0] > 0:
                lines.append(
                    f"{variable}: {METRICS[metric]} {gap['higher']} above {gap['lower']} by "
                    f"{_cell(gap['value'], gap['ci95'])} (interval excludes 0)"
                )
        for entry in block["subgroups"]:
            if entry["note"]:
                lines.append(f"{variable} {entry['name']}: {entry['note']}")
    return lines


def forest_table(section: Mapping) -> pd.DataFrame:
    """The rows of :func:`zoo.scoring.plots.plot_forest`: each subgroup and metric."""
    records = []
    for variable, entry in _rows(section):
        name = "all images" if variable == "all" else f"{variable}: {entry['name']}"
        label = f"{name} (n = {entry['n_images']})"
        for metric, panel in METRICS.items():
            if metric.startswith("mel_") and section["melanoma"] is None:
                continue
            low, high = entry[f"{metric}_ci95"] or (np.nan, np.nan)
            value = np.nan if entry[metric] is None else entry[metric]
            records.append({"row": label, "panel": panel, "value": value, "low": low, "high": high})
    return pd.DataFrame.from_records(records)


def write_forest(section: Mapping, path: Path, *, title: str) -> Path:
    """``subgroups.png``: the forest plot of the section, the value on all images dashed."""
    from zoo.scoring.plots import plot_forest

    overall = section["overall"]
    reference = {panel: overall[m] for m, panel in METRICS.items()}
    return plot_forest(
        forest_table(section),
        path,
        title=f"{title}\n{melanoma_text(section['melanoma'])}",
        reference=reference,
    )


def subgroups_block(
    truth: pd.DataFrame,
    probs: pd.DataFrame,
    metadata: pd.DataFrame,
    *,
    out: Path,
    title: str,
    **options,
) -> dict | None:
    """:func:`subgroup_section` (``options``: its keywords) and, when there is one,
    ``subgroups.png`` in ``out``."""
    section = subgroup_section(truth, probs, metadata, **options)
    if section is not None:
        write_forest(section, Path(out) / "subgroups.png", title=title)
    return section


def subgroup_report(section: Mapping | None) -> list:
    """What ``zoo evaluate`` prints of the section: the table, then :func:`subgroup_lines`."""
    if not section:
        return []
    return [subgroup_table(section), *(f"  {line}" for line in subgroup_lines(section))]
