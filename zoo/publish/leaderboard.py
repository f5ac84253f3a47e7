"""The published comparison of every member and ensemble evaluated on the same test data.

Reads ``<workspace>/evaluations/*/metrics.json`` (written by ``zoo evaluate``), keeps the
entries scored on one data set and split (the most common, or ``--data NAME``), and writes
``leaderboard.md``, ``leaderboard.csv``, a self-contained ``index.html`` (plots embedded) and
the plots as PNG: melanoma ROC of the top entries, melanocytic sensitivity–specificity curves
(Esteva Fig. 3 style), and balanced accuracy with 95 % intervals. Evaluations with the same
settings and identical probabilities share one row (``member = greedy``); each ensemble shows
its balanced accuracy gain over its best member, with a paired lesion-bootstrap interval.
"""

from __future__ import annotations

import html
import json
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from zoo import console
from zoo.errors import ZooError
from zoo.store import (
    ENSEMBLE_FILE,
    MEMBER_FILE,
    EnsembleRecord,
    EvaluationRecord,
    Layout,
    MemberRecord,
    Record,
    try_load,
)
from zoo.store.outputs import claim_output_folder, output_folder
from zoo.store.workspace import atomic_write_csv, atomic_write_text

REFERENCES = Path(__file__).with_name("references.toml")
TOP = 6
TOP_DETAILS = 3
R = TypeVar("R", bound=Record)


@dataclass
class Entry:
    """One evaluation: a target scored with one setting of TTA and prior correction."""

    folder: Path
    record: EvaluationRecord

    @cached_property
    def metrics(self) -> dict:
        """``metrics.json`` as a plain dict."""
        return self.record.to_dict()

    @property
    def layout(self) -> Layout:
        """The workspace this evaluation lies in (``<workspace>/evaluations/<name>``)."""
        return Layout(self.folder.parent.parent)

    @property
    def target_folder(self) -> Path:
        """The evaluated target's folder in this workspace, found by its checked name: the
        absolute path ``metrics.json`` records is not followed (it may point outside a moved
        or shared workspace)."""
        layout = self.layout
        return layout.ensemble(self.name) if self.kind == "ensemble" else layout.member(self.name)

    @cached_property
    def target(self) -> MemberRecord | EnsembleRecord | None:
        """The evaluated member's or ensemble's record; damaged or gone: None, warned once."""
        folder = self.target_folder
        kind = EnsembleRecord if self.kind == "ensemble" else MemberRecord
        name = ENSEMBLE_FILE if self.kind == "ensemble" else MEMBER_FILE
        return _load_or_warn(kind, folder / name, f"{self.name}'s details are left blank")

    @property
    def name(self) -> str:
        return self.metrics["target"]["name"]

    @property
    def kind(self) -> str:
        return self.metrics["target"]["kind"]

    @property
    def calibrated(self) -> bool:
        return bool((self.metrics.get("calibration") or {}).get("applied"))

    @property
    def step(self) -> str:
        """The last step applied of raw → + prior correction → + TTA → + calibration."""
        tta, corrected = self.metrics["tta"], self.metrics["prior_correction"]
        calibration = " + calibration" if self.calibrated else ""
        if self.kind == "ensemble":
            return f"ensemble ({'TTA ' + tta if tta != 'none' else 'no TTA'}){calibration}"
        if self.calibrated:
            return "+ calibration" + ("" if corrected else " (no prior correction)")
        if tta == "none":
            return "+ prior correction" if corrected else "raw"
        return f"+ TTA {tta}" + ("" if corrected else " (no prior correction)")

    @property
    def label(self) -> str:
        return f"{self.name} · {self.step}"

    @cached_property
    def predictions(self) -> pd.DataFrame | None:
        """``predictions.csv`` by image id, read once; unreadable: None, warned once."""
        try:
            return self.truth_and_predictions()[1].sort_index()
        except (OSError, KeyError, ValueError, pd.errors.ParserError) as exc:
            problem = f"{self.folder}: predictions unreadable ({exc})"
            if problem not in _WARNED:
                _WARNED.add(problem)
                console.warn(f"{problem}; its row is compared with no other.")
            return None

    def truth_and_predictions(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        read = lambda name: pd.read_csv(self.folder / name, dtype={"image": str}).set_index("image")  # noqa: E731
        truth = read("truth.csv").drop(columns=["score_weight"], errors="ignore")
        return truth, read("predictions.csv")[list(truth.columns)]


def collect(workspace: Path) -> list[Entry]:
    """Every plain (no task, no label map) evaluation in the workspace."""
    _WARNED.clear()
    entries = []
    for file in Layout(workspace).metrics_files():
        record = _load_or_warn(EvaluationRecord, file, None)
        if record is not None and record.is_plain:
            entries.append(Entry(file.parent, record))
    return entries


_WARNED: set[str] = set()


def _load_or_warn(kind: type[R], file: Path, consequence: str | None) -> R | None:
    """``kind.load(file)``; a damaged or unreadable file is one warning line (once per
    process and problem) and None. ``consequence``: what the leaderboard does without it
    (None: the file is skipped)."""
    record, problem = try_load(kind, file)
    if problem is not None and problem not in _WARNED:
        _WARNED.add(problem)
        if consequence is None:
            console.warn(f"skipping {problem}")
        else:
            console.warn(f"{problem.rstrip('.')}; {consequence}.")
    return record


def select(entries: list[Entry], data_name: str | None) -> list[Entry]:
    """The entries of one data set and split: ``data_name``'s, else the most common."""
    key = lambda e: (e.metrics["data"]["fingerprint"], e.metrics["split"])  # noqa: E731
    if data_name:
        entries = [e for e in entries if e.metrics["data"]["name"] == data_name]
        if not entries:
            raise ZooError(
                f"--data {data_name}: no evaluation on a data set of that name; run zoo evaluate first."
            )
    if not entries:
        raise ZooError("no evaluations in this workspace yet: run zoo evaluate TARGET first.")
    groups: dict = {}
    for e in entries:
        groups.setdefault(key(e), []).append(e)
    return max(groups.values(), key=len)


def _class(classes: list[str], wanted: str) -> str | None:
    return next((c for c in classes if c.lower() == wanted), None)


def _target_facts(entry: Entry) -> dict:
    """Parameters and training time of a member, or summed over the members an ensemble uses
    (weight above 0); unknown where a record is damaged (warned once): NaN."""
    facts = {"parameters": np.nan, "train_minutes": np.nan, "images_per_second": None}
    record = entry.target
    if isinstance(record, MemberRecord):
        training = record.training or {}
        plain = entry.metrics["tta"] == "none"
        facts["images_per_second"] = training.get("inference_images_per_second") if plain else None
        members = [record]
    elif isinstance(record, EnsembleRecord):
        members = [
            _load_or_warn(
                MemberRecord, entry.layout.member(name) / MEMBER_FILE, "left out of its sums"
            )
            for name in record.used_member_names
        ]
    else:
        return facts
    present = [m for m in members if m is not None]
    trained = [(m.training or {}) for m in present]
    if trained and all("parameters" in t and "seconds" in t for t in trained):
        facts["parameters"] = int(sum(t["parameters"] for t in trained))
        # a run's snapshots and weight average share its training time: counted once
        runs = {_run_of(m): (m.training or {})["seconds"] for m in present}
        facts["train_minutes"] = sum(runs.values()) / 60
    return facts


def _run_of(member: MemberRecord) -> str:
    """The training run a member came from: its own, or the run whose snapshot or weight
    average it is (``member.json`` ``snapshot.run`` / ``swa.run``)."""
    for key in ("snapshot", "swa"):
        origin = member.extra.get(key)
        if isinstance(origin, dict) and isinstance(origin.get("run"), str):
            return origin["run"]
    return member.name


def row(entry: Entry) -> dict:
    """The leaderboard columns of one entry."""
    m = entry.metrics
    mel = _class(m["classes"], "mel")
    per, ci = m["per_category"], m.get("ci95") or {}
    interval = ci.get("balanced_accuracy") or [None, None]
    macro_interval = ci.get("macro_auc") or [None, None]
    mel_interval = ((ci.get("auc") or {}).get(mel) if mel else None) or [None, None]
    timing = m.get("inference") or {}
    facts = _target_facts(entry)
    get = lambda metric: per[metric].get(mel) if mel else None  # noqa: E731
    return {
        "entry": entry.name,
        "kind": entry.kind,
        "step": entry.step,
        "tta": m["tta"],
        "prior_correction": m["prior_correction"],
        "balanced_accuracy": m["aggregate"]["balanced_accuracy"],
        "ba_low": interval[0],
        "ba_high": interval[1],
        "macro_auc": m["macro_average"]["auc"],
        "macro_auc_low": macro_interval[0],
        "macro_auc_high": macro_interval[1],
        "mel_auc": get("auc"),
        "mel_auc_low": mel_interval[0],
        "mel_auc_high": mel_interval[1],
        "mel_auc_sens_80": get("auc_sens_80"),
        "mel_sensitivity": get("sensitivity"),
        "mel_specificity": get("specificity"),
        **_mel_points(m, mel),
        **_calibration_columns(m),
        **_ood_columns(m),
        "parameters": facts["parameters"],
        "train_minutes": facts["train_minutes"],
        "images_per_second": timing.get("model_images_per_second") or facts["images_per_second"],
        "n_images": m["n_images"],
        "folder": entry.folder.name,
        "weights": _weights_text(entry),
        **_class_columns(m),
    }


def _weights_text(entry: Entry) -> str | None:
    """An ensemble's ``member:weight;…`` (as shown on the page), else ``None``."""
    if not isinstance(entry.target, EnsembleRecord):
        return None
    return ";".join(f"{name}:{float(w):.6g}" for name, w in entry.target.weights.items())


def _class_columns(metrics: dict) -> dict:
    """Per class ``n_<c>, sensitivity_<c>, specificity_<c>, auc_<c>, auc_low_<c>, auc_high_<c>``
    (the page's per-class tables)."""
    per, ci = metrics["per_category"], (metrics.get("ci95") or {}).get("auc") or {}
    out = {}
    for c in metrics["classes"]:
        interval = ci.get(c) or [None, None]
        out[f"n_{c}"] = metrics["class_counts"][c]
        out[f"sensitivity_{c}"] = per["sensitivity"][c]
        out[f"specificity_{c}"] = per["specificity"][c]
        out[f"auc_{c}"] = per["auc"][c]
        out[f"auc_low_{c}"], out[f"auc_high_{c}"] = interval
    return out


def _mel_points(metrics: dict, mel: str | None) -> dict:
    """Melanoma specificity at 90 % and 95 % sensitivity, and sensitivity and specificity at
    the at-least-90 % point, thresholds chosen on validation."""
    points = {
        (round(p["target"], 4), bool(p.get("at_least"))): p
        for p in metrics.get("operating_points") or []
        if p["class"] == mel and p["metric"] == "sensitivity"
    }
    out = {}
    for level in (90, 95):
        p = points.get((level / 100, False)) or {}
        interval = p.get("specificity_ci95") or [None, None]
        out[f"mel_spec_at_sens_{level}"] = p.get("specificity")
        out[f"mel_spec_at_sens_{level}_low"] = interval[0]
        out[f"mel_spec_at_sens_{level}_high"] = interval[1]
        out[f"mel_sens_at_sens_{level}"] = p.get("sensitivity")
        out[f"mel_threshold_at_sens_{level}"] = p.get("threshold")
    p = points.get((0.9, True)) or {}
    for metric in ("sensitivity", "specificity"):
        interval = p.get(f"{metric}_ci95") or [None, None]
        out[f"mel_{metric[:4]}_at_least_90"] = p.get(metric)
        out[f"mel_{metric[:4]}_at_least_90_low"] = interval[0]
        out[f"mel_{metric[:4]}_at_least_90_high"] = interval[1]
    out["mel_threshold_at_least_90"] = p.get("threshold")
    return out


def _calibration_columns(metrics: dict) -> dict:
    """Temperature and the calibration of the scored probabilities (after, else before)."""
    cal = metrics.get("calibration") or {}
    scored = cal.get("after") or cal.get("before") or {}
    interval = (scored.get("ci95") or {}).get("ece") or [None, None]
    return {
        "calibrated": bool(cal.get("applied")),
        "temperature": cal.get("temperature"),
        "ece": scored.get("ece"),
        "ece_low": interval[0],
        "ece_high": interval[1],
        "brier": scored.get("brier"),
        "nll": scored.get("nll"),
    }


def _ood_columns(metrics: dict) -> dict:
    """Out-of-distribution separation, where the evaluation had ``--ood-data``: the data,
    each score's AUROC, and the shares flagged at the validation threshold."""
    ood = metrics.get("ood") or {}
    scores, flag = ood.get("scores") or {}, ood.get("flag") or {}
    out = {"ood_data": ood.get("data_name") or ood.get("data")}
    for name in ("mahalanobis", "msp", "energy"):
        out[f"ood_auroc_{name}"] = (scores.get(name) or {}).get("auroc")
    out["ood_flagged"] = flag.get("ood_flagged")
    out["in_flagged"] = flag.get("in_flagged")
    return out


def _ensemble_speeds(frame: pd.DataFrame, entries: list[Entry]) -> pd.DataFrame:
    """An ensemble runs every member of weight above 0: its images/s is
    1 / Σ 1/(member images/s) over those, at its TTA."""
    speed = {
        (r.entry, r.tta): r.images_per_second for r in frame.itertuples() if r.kind == "member"
    }
    for i, entry in enumerate(entries):
        if not isinstance(entry.target, EnsembleRecord):
            continue
        rates = [speed.get((n, entry.metrics["tta"])) for n in entry.target.used_member_names]
        if rates and all(r for r in rates):
            frame.loc[i, "images_per_second"] = 1 / sum(1 / r for r in rates)
    return frame


# --- identical entries and ensemble gains ----------------------------------------------------

IDENTICAL_ATOL = 1e-9  # probabilities this close count as the same prediction
GAIN_COLUMNS = ("ensemble_gain", "ensemble_gain_low", "ensemble_gain_high", "best_member")


def settings(entry: Entry) -> tuple:
    """What two evaluations of one data set and split must share to be compared: TTA, prior
    correction, calibration and target priors."""
    m = entry.metrics
    target_priors = (m.get("priors") or {}).get("target_priors")
    return m["tta"], bool(m["prior_correction"]), entry.calibrated, json.dumps(target_priors)


def identical(a: Entry, b: Entry) -> bool:
    """Same settings, and the same probabilities (within ``IDENTICAL_ATOL``) for the same images."""
    if settings(a) != settings(b):
        return False
    p, q = a.predictions, b.predictions
    if p is None or q is None or p.shape != q.shape:
        return False
    if not p.index.equals(q.index) or list(p.columns) != list(q.columns):
        return False
    return bool(np.allclose(p.to_numpy(), q.to_numpy(), rtol=0.0, atol=IDENTICAL_ATOL))


def identical_groups(entries: list[Entry]) -> list[list[int]]:
    """Positions of the entries grouped by identical predictions, in first-seen order."""
    groups: list[list[int]] = []
    for i, entry in enumerate(entries):
        home = next((g for g in groups if identical(entries[g[0]], entry)), None)
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    return groups


def _collapse(frame: pd.DataFrame, entries: list[Entry]) -> pd.DataFrame:
    """One row per group of identical entries of different names: a member's row if the group
    has one, named ``member = ensemble = …``; ``same_as`` lists the other names."""
    frame = frame.assign(same_as="")
    keep = []
    for group in identical_groups(entries):
        names = list(dict.fromkeys(entries[i].name for i in group))
        if len(names) < 2:
            keep.extend(group)
            continue
        first = min(group, key=lambda i: (entries[i].kind != "member", i))
        names.remove(entries[first].name)
        frame.loc[first, "entry"] = " = ".join([entries[first].name, *names])
        frame.loc[first, "same_as"] = ";".join(names)
        gained = [i for i in group if pd.notna(frame.loc[i, "ensemble_gain"])]
        if gained and pd.isna(frame.loc[first, "ensemble_gain"]):
            frame.loc[first, list(GAIN_COLUMNS)] = frame.loc[gained[0], list(GAIN_COLUMNS)]
        keep.append(first)
    return frame.loc[sorted(keep)].reset_index(drop=True)


def best_member(entry: Entry, entries: list[Entry]) -> Entry | None:
    """The ensemble's member of highest balanced accuracy among those evaluated with its
    settings (first listed on a tie); None for a member or when none was."""
    if entry.kind != "ensemble" or not isinstance(entry.target, EnsembleRecord):
        return None
    names = set(entry.target.member_names)
    same = [
        e
        for e in entries
        if e.kind == "member" and e.name in names and settings(e) == settings(entry)
    ]
    return max(same, key=lambda e: e.metrics["aggregate"]["balanced_accuracy"], default=None)


class Lesions:
    """The lesion of each evaluated image, from the evaluation's data set (file list and
    labels, no pixels; read once per data set). A data set that cannot be read, or has
    changed since the evaluation, is a ZooError."""

    def __init__(self, workspace: Path):
        self.workspace, self._read = Path(workspace), {}

    def __call__(self, entry: Entry, index: pd.Index) -> pd.Series | None:
        data = entry.metrics["data"]
        key = (data.get("spec"), data["fingerprint"])
        if key not in self._read:
            self._read[key] = self._load(*key)
        dataset = self._read[key]
        if isinstance(dataset, ZooError):
            raise dataset
        return dataset.lesion_groups(index)

    def _load(self, spec: str | None, fingerprint: str):
        from zoo.data import load_dataset

        try:
            dataset = load_dataset(spec, workspace=self.workspace)
        except ZooError as exc:
            return ZooError(f"cannot read data set {spec} ({exc})")
        if dataset.fingerprint != fingerprint:
            return ZooError(
                f"data set {spec} has changed since it was evaluated (fingerprint "
                f"{dataset.fingerprint}, evaluated {fingerprint})"
            )
        return dataset


def gain_interval(entry: Entry, best: Entry, lesions: Lesions) -> list[float] | None:
    """95 % interval of the balanced accuracy gain of ``entry`` over ``best``: both scored on
    each of the resamples behind the entry's own intervals (None without them)."""
    from zoo.scoring.metrics import paired_difference_ci

    ci = entry.metrics.get("ci95")
    if not ci or not ci.get("n_resamples"):
        return None
    try:
        truth, ours = entry.truth_and_predictions()
        theirs = best.truth_and_predictions()[1]
        groups = lesions(entry, truth.index) if ci.get("unit") == "lesion" else None
        return paired_difference_ci(
            truth,
            ours,
            theirs,
            groups=groups,
            n_resamples=int(ci["n_resamples"]),
            seed=int(ci.get("seed", 0)),
            level=float(ci.get("level", 0.95)),
        )
    except (ZooError, OSError, KeyError, ValueError) as exc:
        problem = f"the gain interval of {entry.name} over {best.name} is left blank: {exc}"
        if problem not in _WARNED:
            _WARNED.add(problem)
            console.warn(problem)
        return None


def class_rates(entry: Entry, lesions: Lesions) -> dict:
    """Per class, the argmax sensitivity and specificity of ``entry`` (the confusion matrix's
    rows and columns), with intervals on the resamples behind the entry's own intervals; the
    intervals are left blank, with a warning, when those resamples cannot be drawn again."""
    from zoo.scoring.metrics import argmax_rates

    truth, predictions = entry.truth_and_predictions()
    ci = entry.metrics.get("ci95") or {}
    try:
        groups = lesions(entry, truth.index) if ci.get("unit") == "lesion" else None
        n_resamples = int(ci.get("n_resamples") or 0)
    except (ZooError, OSError, KeyError, ValueError) as exc:
        problem = f"the per-class intervals of {entry.name} are left blank: {exc}"
        if problem not in _WARNED:
            _WARNED.add(problem)
            console.warn(problem)
        groups, n_resamples = None, 0
    return argmax_rates(
        truth,
        predictions,
        groups=groups,
        n_resamples=n_resamples,
        seed=int(ci.get("seed", 0)),
        level=float(ci.get("level", 0.95)),
    )


def ensemble_gain(entry: Entry, entries: list[Entry], lesions: Lesions) -> dict:
    """``GAIN_COLUMNS`` of one entry: an ensemble's balanced accuracy minus its best member's
    (same settings), with the paired interval; empty for members."""
    best = best_member(entry, entries)
    if best is None:
        return dict.fromkeys(GAIN_COLUMNS)
    ba = lambda e: e.metrics["aggregate"]["balanced_accuracy"]  # noqa: E731
    low, high = gain_interval(entry, best, lesions) or (None, None)
    return dict(zip(GAIN_COLUMNS, (ba(entry) - ba(best), low, high, best.name), strict=True))


def ranking_frame(entries: list[Entry], workspace: Path) -> pd.DataFrame:
    """Every entry's row (:func:`row`) with its ensemble gain; identical entries collapsed."""
    frame = _ensemble_speeds(pd.DataFrame([row(e) for e in entries]), entries)
    lesions = Lesions(workspace)
    gains = pd.DataFrame([ensemble_gain(e, entries, lesions) for e in entries], index=frame.index)
    at = frame.columns.get_loc("ba_high") + 1
    for offset, column in enumerate(GAIN_COLUMNS):
        frame.insert(at + offset, column, gains[column])
    frame = _collapse(frame, entries)
    frame.insert(frame.columns.get_loc("entry") + 1, "same_as", frame.pop("same_as"))
    return frame


def _has_ensemble(frame: pd.DataFrame, entries: list[Entry]) -> pd.Series:
    """Rows of an ensemble, alone or collapsed with identical entries."""
    ensembles = {e.name for e in entries if e.kind == "ensemble"}
    collapsed = frame["same_as"].map(lambda s: bool(ensembles & set(str(s).split(";"))))
    return (frame["kind"] == "ensemble") | collapsed


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _interval(low, high) -> str:
    """``low–high``, or ``–`` when the interval is unknown."""
    if low is None or pd.isna(low):
        return "–"
    return f"{_fmt(low)}–{_fmt(high)}"


def _with_interval(value, low, high) -> str:
    """``value [low–high]`` for the markdown tables (the value alone without an interval)."""
    return _fmt(value) if low is None or pd.isna(low) else f"{_fmt(value)} [{_interval(low, high)}]"


def _gain_text(value, low, high) -> str:
    """``+0.012 [-0.004–+0.027]``; empty for a member (no gain)."""
    if value is None or pd.isna(value):
        return ""
    shown = f"{value:+.3f}"
    return shown if low is None or pd.isna(low) else f"{shown} [{low:+.3f}–{high:+.3f}]"


def _markdown_table(frame: pd.DataFrame) -> str:
    header = (
        "| # | entry | step | balanced acc. [95 % CI] | ensemble gain [95 % CI] | "
        "macro AUC [95 % CI] | mel AUC [95 % CI] | "
        "mel AUC > 80 % sens | mel sens | mel spec | params | train min | img/s |"
    )
    lines = [header, "|" + "---|" * 13]
    for i, r in enumerate(frame.itertuples(), 1):
        ba = _with_interval(r.balanced_accuracy, r.ba_low, r.ba_high)
        gain = _gain_text(r.ensemble_gain, r.ensemble_gain_low, r.ensemble_gain_high)
        macro = _with_interval(r.macro_auc, r.macro_auc_low, r.macro_auc_high)
        mel = _with_interval(r.mel_auc, r.mel_auc_low, r.mel_auc_high)
        lines.append(
            f"| {i} | {r.entry} | {r.step} | {ba} | {gain} | {macro} | {mel} | "
            f"{_fmt(r.mel_auc_sens_80)} | {_fmt(r.mel_sensitivity)} | {_fmt(r.mel_specificity)} | "
            f"{_fmt(r.parameters / 1e6, 2)} M | {_fmt(r.train_minutes, 1)} | {_fmt(r.images_per_second, 0)} |"
        )
    return "\n".join(lines)


def _references() -> list[dict]:
    return tomllib.loads(REFERENCES.read_text())["reference"]


def _plots(entries: list[Entry], ranked: pd.DataFrame, out: Path) -> dict[str, Path]:
    """ROC (melanoma) and melanocytic sens–spec curves of the top entries; the bar chart."""
    from sklearn.metrics import roc_curve

    from zoo.scoring.plots import plot_bars_with_ci, plot_roc_curves, plot_sens_spec
    from zoo.scoring.taxonomy import score_task

    by_folder = {e.folder.name: e for e in entries}
    top = [by_folder[f] for f in ranked["folder"].head(TOP)]
    rocs, sens_spec, points = {}, {}, {}
    for entry in top:
        truth, probs = entry.truth_and_predictions()
        mel = _class(list(truth.columns), "mel")
        if mel and truth[mel].nunique() == 2:
            fpr, tpr, _ = roc_curve(truth[mel], probs[mel])
            rocs[entry.label] = (fpr, tpr, entry.metrics["per_category"]["auc"][mel])
        try:
            task = score_task(truth, probs, "melanocytic")
        except ZooError:
            continue
        if task["auc"] is not None:
            curve = task["curve"]
            sens_spec[entry.label] = (curve["sensitivity"], curve["specificity"], task["auc"])
            points[entry.label] = (task["sensitivity"], task["specificity"])
    files = {
        "bars": plot_bars_with_ci(
            list(ranked["entry"] + " · " + ranked["step"]),
            list(ranked["balanced_accuracy"]),
            [
                None if pd.isna(lo) else (lo, hi)
                for lo, hi in zip(ranked["ba_low"], ranked["ba_high"], strict=True)
            ],
            out / "balanced_accuracy.png",
            xlabel="balanced multiclass accuracy (95 % CI)",
        ),
    }
    if rocs:
        files["roc"] = plot_roc_curves(
            rocs, out / "roc_melanoma.png", title="Melanoma vs rest: top entries"
        )
    if sens_spec:
        files["sens_spec"] = plot_sens_spec(
            sens_spec,
            out / "melanocytic_sens_spec.png",
            title="Melanocytic: melanoma vs nevus",
            operating_points=points,
        )
    return files


def _commit() -> str:
    """The git commit of the zoo source that writes the leaderboard."""
    from zoo.training.card import source_commit

    return source_commit()


def _confusion(entry: Entry) -> pd.DataFrame:
    """Counts of (true class, argmax class); a tie is "undecided"."""
    from zoo.scoring.metrics import argmax_labels

    truth, probs = entry.truth_and_predictions()
    classes = list(truth.columns)
    names = np.array([*classes, "undecided"], dtype=object)[argmax_labels(probs.to_numpy())]
    matrix = pd.crosstab(
        pd.Categorical(truth.idxmax(axis=1), categories=classes),
        pd.Categorical(names, categories=[*classes, "undecided"]),
        dropna=False,
    )
    if matrix["undecided"].sum() == 0:
        matrix = matrix.drop(columns="undecided")
    return matrix.rename_axis(index=None, columns=None)


def _confusion_table(entries: list[Entry], ranked: pd.DataFrame) -> pd.DataFrame:
    """The page's confusion matrices in long form: ``entry, step, folder, true, predicted, count``."""
    by_folder = {e.folder.name: e for e in entries}
    frames = []
    for folder in ranked["folder"].head(TOP_DETAILS):
        entry = by_folder[folder]
        long = _confusion(entry).stack().rename("count").reset_index()
        long.columns = ["true", "predicted", "count"]
        frames.append(long.assign(entry=entry.name, step=entry.step, folder=folder))
    columns = ["entry", "step", "folder", "true", "predicted", "count"]
    return (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )


def _top(entries: list[Entry], ranked: pd.DataFrame) -> list[Entry]:
    """The entries of the first :data:`TOP_DETAILS` ranking rows, best first."""
    by_folder = {e.folder.name: e for e in entries}
    return [by_folder[folder] for folder in ranked["folder"].head(TOP_DETAILS)]


def _details(entries: list[Entry], ranked: pd.DataFrame, lesions: Lesions) -> str:
    """Per-class table, confusion matrix and operating points of the top entries."""
    from zoo.publish.page import class_table, confusion_table, points_table

    parts = []
    for entry in _top(entries, ranked):
        unit = (entry.metrics.get("ci95") or {}).get("unit", "lesion")
        parts.append(
            f"<h3>{html.escape(entry.label)}</h3><div class='grid'>"
            f"<section><h4>Per class: the argmax decision, as in the confusion matrix "
            f"(n = {entry.metrics['n_images']}; 95 % {unit} bootstrap)</h4>"
            f"{class_table(entry.metrics, class_rates(entry, lesions))}</section>"
            f"<section><h4>Confusion matrix (counts)</h4>{confusion_table(_confusion(entry))}"
            "</section></div>"
            f"{points_table(entry.metrics)}"
        )
    return "".join(parts)


def _ensemble_members(entries: list[Entry]) -> str:
    parts, seen = [], set()
    for entry in entries:
        info = entry.target
        if not isinstance(info, EnsembleRecord) or entry.name in seen:
            continue
        seen.add(entry.name)
        items = "".join(
            f"<li>{html.escape(str(name))}: weight {float(w):.3f}</li>"
            for name, w in info.weights.items()
        )
        sole = info.extra.get("reduces_to")
        reduced = f"; all weight on {html.escape(str(sole))}" if sole else ""
        parts.append(
            f"<h3>{html.escape(entry.name)}</h3><p>rule {html.escape(info.rule)}, "
            f"TTA {html.escape(info.tta)}, prior correction "
            f"{'on' if info.prior_correction else 'off'}{reduced}</p><ul>{items}</ul>"
        )
    return "".join(parts) or "<p>No ensemble evaluated yet.</p>"


CAPTIONS = {
    "bars": (
        "Balanced accuracy",
        "Balanced multiclass accuracy of every entry (mean per-class recall of the argmax) with "
        "95 % bootstrap intervals over lesions.",
    ),
    "roc": (
        "Melanoma ROC",
        "Melanoma against all other classes: ROC curves of the top entries, AUC in the legend.",
    ),
    "sens_spec": (
        "Melanocytic sensitivity–specificity",
        "Melanoma against nevus (Esteva et al. 2017, Fig. 3 style) for the top entries; dots "
        "mark the threshold 0.5.",
    ),
}


def _figures(plots: dict[str, Path], n: int) -> str:
    from zoo.publish.page import figure

    return "".join(
        figure(path, title=f"{CAPTIONS[name][0]} (n = {n} images)", caption=CAPTIONS[name][1])
        for name, path in plots.items()
    )


def _html(
    title: str, intro: str, *, entries, ranked: pd.DataFrame, plots, meta, workspace, out
) -> str:
    from zoo.publish.page import page, ranking_table
    from zoo.publish.subgroups import subgroup_sections

    refs = "".join(
        f"<li><b>{html.escape(r['source'])}</b>: {html.escape(r['model'])}; {html.escape(r['data'])}; "
        f"{html.escape(r['metric'])}{' = ' + str(r['value']) if 'value' in r else ''}</li>"
        for r in _references()
    )
    return page(
        title=title,
        meta=meta,
        intro=intro,
        ranking=ranking_table(ranked),
        steps=sorted(ranked["step"].unique()),
        details=_details(entries, ranked, Lesions(workspace)),
        subgroups=subgroup_sections(_top(entries, ranked), out),
        ensembles=_ensemble_members(entries),
        figures=_figures(plots, int(ranked["n_images"].max())),
        references=refs,
    )


def _intervals(frame: pd.DataFrame, prefix: str) -> list[str]:
    return [
        _interval(lo, hi)
        for lo, hi in zip(frame[f"{prefix}_low"], frame[f"{prefix}_high"], strict=True)
    ]


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Rounded, human-readable columns for HTML and the console."""
    shown = pd.DataFrame(
        {
            "entry": frame["entry"],
            "step": frame["step"],
            "balanced acc.": frame["balanced_accuracy"].map(_fmt),
            "95 % CI": _intervals(frame, "ba"),
            "macro AUC": frame["macro_auc"].map(_fmt),
            "macro AUC 95 % CI": _intervals(frame, "macro_auc"),
            "mel AUC": frame["mel_auc"].map(_fmt),
            "mel AUC 95 % CI": _intervals(frame, "mel_auc"),
            "mel AUC>80%sens": frame["mel_auc_sens_80"].map(_fmt),
            "mel sens": frame["mel_sensitivity"].map(_fmt),
            "mel spec": frame["mel_specificity"].map(_fmt),
            "params (M)": (frame["parameters"] / 1e6).map(lambda v: _fmt(v, 2)),
            "train min": frame["train_minutes"].map(lambda v: _fmt(v, 1)),
            "img/s": frame["images_per_second"].map(lambda v: _fmt(v, 0)),
        }
    )
    return shown


# what a leaderboard folder held before zoo marked its folders (accepted inside the workspace)
LEADERBOARD_FILES = frozenset(
    {"leaderboard.csv", "confusion.csv", "leaderboard.md", "index.html"}
    | {"roc_melanoma.png", "melanocytic_sens_spec.png", "balanced_accuracy.png"}
)


def leaderboard_folder(workspace: Path, out: str | Path | None) -> Path:
    """``out`` (default ``<workspace>/leaderboard``), absolute, when zoo may replace it
    (:func:`zoo.store.outputs.claim_output_folder`); else a one-line ZooError."""
    folder = out or Layout(workspace).leaderboard
    return claim_output_folder(folder, "leaderboard", workspace=workspace, legacy=LEADERBOARD_FILES)


def publish_leaderboard(
    workspace: Path, *, out: Path | None = None, data_name: str | None = None
) -> Path:
    """Write the leaderboard files into ``out`` (default ``<workspace>/leaderboard``): the
    folder is built under a temporary name, marked as zoo's and swapped in whole, so ``out``
    must be new, empty or an earlier leaderboard."""
    final = leaderboard_folder(workspace, out)
    with output_folder(
        final,
        "leaderboard",
        written_by="zoo leaderboard",
        workspace=workspace,
        legacy=LEADERBOARD_FILES,
    ) as tmp:
        _write_leaderboard(workspace, out=tmp, data_name=data_name)
    return final


def _write_leaderboard(workspace: Path, *, out: Path, data_name: str | None) -> Path:
    """Write the leaderboard files into the (temporary) folder ``out``."""
    entries = select(collect(workspace), data_name)
    frame = ranking_frame(entries, workspace)
    ranked = frame.sort_values("balanced_accuracy", ascending=False, kind="stable").reset_index(
        drop=True
    )
    order = {"raw": 0, "+ prior correction": 1}
    members = frame[frame["kind"] == "member"].copy()
    members["order"] = members["step"].map(lambda s: order.get(s, 2))
    members["name"] = members["entry"].str.split(" = ").str[0]  # collapsed: "member = ensemble"
    best = members.groupby("name")["balanced_accuracy"].transform("max")
    steps = members.assign(best=best).sort_values(
        ["best", "name", "order"], ascending=[False, True, True]
    )
    ensembles = ranked[_has_ensemble(ranked, entries)]
    data = entries[0].metrics["data"]
    split = entries[0].metrics["split"]
    title = (
        f"zoo leaderboard — {data['name']} {split} split ({entries[0].metrics['n_images']} images)"
    )
    intro = (
        f"{len(entries)} evaluations of {len({e.name for e in entries})} targets on data set {data['name']} "
        f"(fingerprint {data['fingerprint']}), {split} split. Balanced accuracy is the mean per-class "
        "recall (ISIC balanced multiclass accuracy); intervals are 95 % bootstrap over lesions. "
        "Melanoma operating points are chosen on validation: at 90 % and 95 % sensitivity there, "
        "and at the highest threshold that reaches 90 % in 95 % of validation resamples "
        "(the ≥ 90 % point); under each top entry, a table gives the sensitivity and the "
        "specificity every point reached on the evaluated images. Per-class sensitivity and "
        "specificity there are those of the argmax decision, as in the confusion matrix. "
        "Evaluations with the same settings and the same probabilities (within 1e-9) share one "
        "row, named a = b. Ensemble gain: an ensemble's balanced accuracy minus that of its best "
        "member with the same TTA, prior correction and calibration; its interval is a paired "
        "bootstrap (both scored on the same lesion resamples)."
    )
    ood = frame.dropna(subset=["ood_auroc_mahalanobis"]) if "ood_auroc_mahalanobis" in frame else []
    if len(ood):
        intro += (
            f" OOD AUROC: how well the Mahalanobis distance of the last hidden layer separates "
            f"the evaluated images from those of data set {ood['ood_data'].iloc[0]} "
            "(out-of-distribution images), "
            "for the evaluations run with them."
        )
    plots = _plots(entries, ranked, out)
    atomic_write_csv(out / "leaderboard.csv", ranked, index=False, float_format="%.6g")
    atomic_write_csv(out / "confusion.csv", _confusion_table(entries, ranked), index=False)
    references = "\n".join(
        f"- **{r['source']}** — {r['model']}; {r['data']}; {r['metric']}"
        + (f": **{r['value']}**" if "value" in r else "")
        for r in _references()
    )
    markdown = (
        "\n\n".join(
            [
                f"# {title}",
                intro,
                "## Ranking (all entries, by balanced accuracy)",
                _markdown_table(ranked),
                "## Members step by step: raw → + prior correction → + TTA",
                _markdown_table(steps),
                "## Ensembles",
                _markdown_table(ensembles) if len(ensembles) else "No ensemble evaluated yet.",
                "## Plots",
                "\n".join(f"![{name}]({path.name})" for name, path in plots.items()),
                "## Published numbers (measured on other data — not comparable one-to-one)",
                references,
                "Research software, not for diagnosis.",
            ]
        )
        + "\n"
    )
    atomic_write_text(out / "leaderboard.md", markdown)
    import time

    import zoo

    meta = {
        "data set": f"{data['name']} (fingerprint {data['fingerprint']})",
        "split": f"{split}, {entries[0].metrics['n_images']} images",
        "generated": time.strftime("%Y-%m-%d %H:%M %Z"),
        "zoo": zoo.__version__,
        "commit": _commit(),
    }
    page = _html(
        title,
        intro,
        entries=entries,
        ranked=ranked,
        plots=plots,
        meta=meta,
        workspace=workspace,
        out=out,
    )
    atomic_write_text(out / "index.html", page)
    return out


def leaderboard_command(
    workspace: Path, *, out: str | Path | None = None, data_name: str | None = None, as_json=False
) -> int:
    """``zoo leaderboard``: publish under the folder's lock, then print the ranking."""
    from rich.table import Table

    from zoo.store.locks import hold

    folder = leaderboard_folder(workspace, out)  # refused before the lock is taken
    with hold(folder, what="zoo leaderboard"):
        out = publish_leaderboard(workspace, out=folder, data_name=data_name)
    ranked = pd.read_csv(out / "leaderboard.csv")
    if as_json:  # the ranking as leaderboard.csv holds it, one object per row
        console.print_json(json.loads(ranked.to_json(orient="records")))
        return 0
    shown = _display(ranked).head(15)[
        ["entry", "step", "balanced acc.", "95 % CI", "macro AUC", "mel AUC"]
    ]
    table = Table(title=f"leaderboard ({len(ranked)} entries)")
    for column in shown.columns:
        table.add_column(column, justify="left" if column in ("entry", "step") else "right")
    for values in shown.itertuples(index=False):
        table.add_row(*map(str, values))
    console.console.print(table)
    console.info(f"Published the leaderboard to {out}")
    return 0
