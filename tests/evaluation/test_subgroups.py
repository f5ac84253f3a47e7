"""zoo.evaluation.subgroups: subgroup metrics with lesion-bootstrap intervals, gaps, notes on
small subgroups, the metrics.json section, the forest plot, and `zoo evaluate` end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from zoo.cli.main import main
from zoo.evaluation.subgroups import (
    FORMAT_VERSION,
    METRICS,
    forest_table,
    subgroup_labels,
    subgroup_report,
    subgroup_section,
    subgroups_block,
    weighted_auc,
)
from zoo.scoring.metrics import bootstrap_statistics

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
DOC = (Path(__file__).resolve().parents[2] / "docs" / "formats.md").read_text(encoding="utf-8")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MEL = CLASSES.index("mel")


def synthetic(n_lesions: int = 400, *, seed: int = 0, worse: str = "male"):
    """Two images per lesion; the ``worse`` sex gets much noisier probabilities."""
    rng = np.random.default_rng(seed)
    lesion_label = rng.choice(len(CLASSES), n_lesions, p=[0.05, 0.07, 0.12, 0.03, 0.2, 0.5, 0.03])
    lesion_sex = rng.choice(["female", "male"], n_lesions)
    ids = [f"ISIC_{i:06d}" for i in range(2 * n_lesions)]
    lesion = np.repeat(np.arange(n_lesions), 2)
    labels, sex = lesion_label[lesion], lesion_sex[lesion]
    noise = np.where(sex == worse, 3.0, 0.7)
    logits = rng.normal(0, 1, (len(ids), len(CLASSES))) * noise[:, None] + 2.5 * np.eye(7)[labels]
    p = np.exp(logits)
    truth = pd.DataFrame(np.eye(7)[labels], index=ids, columns=CLASSES)
    probs = pd.DataFrame(p / p.sum(axis=1, keepdims=True), index=ids, columns=CLASSES)
    groups = pd.Series([f"L{k}" for k in lesion], index=ids)
    metadata = pd.DataFrame({"sex": sex}, index=ids)
    return truth, probs, groups, metadata


def point(threshold: float) -> list[dict]:
    """An evaluation's operating_points block with the served melanoma point."""
    return [{"class": "mel", "spec": "mel:sensitivity>=0.9", "threshold": threshold}]


def hand(truth: pd.DataFrame, probs: pd.DataFrame, rows, threshold: float) -> dict:
    """The subgroup's metrics with scikit-learn and NumPy."""
    t, p = truth[rows], probs[rows]
    y, score = t["mel"].to_numpy() == 1, p["mel"].to_numpy()
    called = score >= threshold
    return {
        "balanced_accuracy": balanced_accuracy_score(
            t.to_numpy().argmax(1), p.to_numpy().argmax(1)
        ),
        "mel_auc": roc_auc_score(y, score),
        "mel_sensitivity": called[y].mean(),
        "mel_specificity": (~called[~y]).mean(),
    }


def test_the_worse_subgroup_and_its_gap_are_found_as_by_hand():
    truth, probs, groups, metadata = synthetic()
    section = subgroup_section(
        truth,
        probs,
        metadata,
        groups=groups,
        operating_points=point(0.3),
        n_resamples=300,
        seed=0,
    )
    sex = section["variables"]["sex"]
    entries = {e["name"]: e for e in sex["subgroups"]}
    assert list(entries) == ["female", "male"]
    by_hand = {s: hand(truth, probs, (metadata["sex"] == s).to_numpy(), 0.3) for s in entries}
    for name, entry in entries.items():
        for metric in METRICS:
            assert entry[metric] == pytest.approx(by_hand[name][metric], abs=1e-12)
        rows = metadata["sex"] == name
        assert entry["n_images"] == rows.sum()
        assert entry["n_lesions"] == groups[rows].nunique()
        assert entry["n_melanoma"] == truth.loc[rows, "mel"].sum()
    for metric in ("balanced_accuracy", "mel_auc", "mel_sensitivity"):
        gap = sex["gaps"][metric]
        assert (gap["higher"], gap["lower"]) == ("female", "male")
        expected = by_hand["female"][metric] - by_hand["male"][metric]
        assert gap["value"] == pytest.approx(expected, abs=1e-12)
        assert gap["ci95"][0] > 0, (metric, gap)  # the interval excludes zero
    assert section["melanoma"]["rule"] == "operating_point"
    assert section["melanoma"]["threshold"] == 0.3


def test_the_gap_interval_is_paired_on_the_bootstraps_resamples():
    """The gap's interval is that of the difference on the very resamples of ``ci95``."""
    truth, probs, groups, metadata = synthetic(n_lesions=150, seed=3)
    section = subgroup_section(
        truth, probs, metadata, groups=groups, operating_points=[], n_resamples=200, seed=7
    )
    female = (metadata["sex"] == "female").to_numpy()
    hits = (probs.to_numpy().argmax(1) == truth.to_numpy().argmax(1)).astype(float)
    labels = truth.to_numpy().argmax(1)

    def balanced(counts, rows):
        out = []
        for w in counts[:, rows]:
            per = np.bincount(labels[rows], weights=w * hits[rows], minlength=7)
            n = np.bincount(labels[rows], weights=w, minlength=7)
            out.append(np.mean(per[n > 0] / n[n > 0]))
        return np.array(out)

    expected = bootstrap_statistics(
        truth.index,
        lambda c: {"gap": balanced(c, female) - balanced(c, ~female)},
        groups=groups,
        n_resamples=200,
        seed=7,
    )["gap"]
    assert section["variables"]["sex"]["gaps"]["balanced_accuracy"]["ci95"] == pytest.approx(
        expected
    )
    assert section["bootstrap"] == {"n_resamples": 200, "seed": 7, "level": 0.95, "unit": "lesion"}
    assert section["melanoma"]["rule"] == "argmax"
    assert any("argmax" in note for note in section["notes"])


def test_small_subgroups_get_a_note_instead_of_numbers():
    truth, probs, groups, metadata = synthetic(n_lesions=300, seed=1)
    lesion_of = groups.str[1:].astype(int)
    mel = truth["mel"] == 1
    site = np.where(lesion_of < 100, "back", "trunk")
    # "face": 5 lesions (nothing reported); "scalp": 40 lesions without a single melanoma
    site[(lesion_of >= 200) & (lesion_of < 205)] = "face"
    no_mel_lesions = groups[~mel].unique()[-40:]
    site[groups.isin(no_mel_lesions).to_numpy() & ~mel.to_numpy()] = "scalp"
    metadata = metadata.assign(site=site)
    section = subgroup_section(
        truth, probs, metadata, groups=groups, operating_points=[], n_resamples=50, seed=0
    )
    sites = {e["name"]: e for e in section["variables"]["site"]["subgroups"]}
    assert "face" not in sites and section["other_sites"] == {"face": sites["other"]["n_images"]}
    other = sites["other"]
    assert other["note"] == "fewer than 10 lesions (5): nothing reported"
    assert all(other[m] is None and other[f"{m}_ci95"] is None for m in METRICS)
    scalp = sites["scalp"]
    assert scalp["n_melanoma_lesions"] == 0
    assert (
        "fewer than 10 melanoma lesions (0): melanoma AUC and sensitivity not reported"
        in (scalp["note"])
    )
    assert scalp["mel_auc"] is None and scalp["mel_sensitivity"] is None
    assert scalp["mel_specificity"] is not None and scalp["balanced_accuracy"] is not None
    gaps = section["variables"]["site"]["gaps"]
    assert "scalp" not in (gaps["mel_sensitivity"]["higher"], gaps["mel_sensitivity"]["lower"])
    assert "other" not in (gaps["balanced_accuracy"]["higher"], gaps["balanced_accuracy"]["lower"])
    lines = "\n".join(map(str, subgroup_report(section)[1:]))
    assert "site other: fewer than 10 lesions (5): nothing reported" in lines


def test_subgroup_labels_bands_sites_and_confirmation():
    ids = [f"i{k}" for k in range(8)]
    metadata = pd.DataFrame(
        {
            "sex": ["male", "F", "", "unknown", "female", "MALE", "nan", "female"],
            "age": ["29.9", "30", "49", "50.0", "69", "70", "", "-5"],
            "confirmation": [
                "histo",
                "follow_up",
                "consensus",
                "confocal",
                "serial imaging showing no change",
                "confocal microscopy with consensus dermoscopy",
                "single image expert consensus",
                "histopathology",
            ],
        },
        index=ids,
    )
    labels, rare = subgroup_labels(metadata, pd.Series(ids, index=ids))
    assert labels["sex"].tolist() == ["male", "female", "unknown", "unknown"] + [
        "female",
        "male",
        "unknown",
        "female",
    ]
    assert labels["age"].tolist() == ["<30", "30-49", "30-49", "50-69"] + [
        "50-69",
        ">=70",
        "unknown",
        "unknown",
    ]
    assert labels["confirmation"].tolist() == [
        "histopathology",
        "follow-up",
        "consensus",
        "confocal",
        "follow-up",
        "confocal",
        "consensus",
        "histopathology",
    ]
    assert "site" not in labels and rare == {}
    nothing, _ = subgroup_labels(pd.DataFrame({"sex": [""] * 8}, index=ids), pd.Series(ids))
    assert nothing == {}  # a variable without a known value is left out


def test_weighted_auc_matches_scikit_learn_with_sample_weights():
    rng = np.random.default_rng(5)
    y = (rng.random(60) < 0.3).astype(float)
    score = np.round(rng.random(60), 1)  # ties
    counts = rng.integers(0, 3, (4, 60)).astype(float)
    got = weighted_auc(counts, y, score)
    for row, value in zip(counts, got, strict=True):
        assert value == pytest.approx(roc_auc_score(y, score, sample_weight=row))
    assert np.isnan(weighted_auc(np.ones((1, 60)), np.zeros(60), score))[0]


def _keys(data, depth: int = 3) -> list[str]:
    found = []
    for key, value in data.items():
        found.append(key)
        if depth > 1 and isinstance(value, dict):
            found += _keys(value, depth - 1)
    return found


def test_section_keys_version_json_and_documentation():
    truth, probs, groups, metadata = synthetic(n_lesions=120, seed=2)
    metadata = metadata.assign(
        age=np.resize(["25", "45", "65", "85"], len(truth)),
        site=np.resize(["back", "trunk"], len(truth)),
        confirmation="histo",
    )
    section = subgroup_section(
        truth, probs, metadata, groups=None, operating_points=point(0.2), n_resamples=20, seed=0
    )
    json.dumps(section, allow_nan=False)  # plain JSON, no NaN
    assert section["format_version"] == FORMAT_VERSION == 1
    assert set(section) == {
        "format_version",
        "metrics",
        "melanoma",
        "bootstrap",
        "minimums",
        "other_sites",
        "notes",
        "overall",
        "variables",
    }
    assert list(section["variables"]) == ["sex", "age", "site", "confirmation"]
    assert section["bootstrap"]["unit"] == "image"
    entry_keys = {"name", "n_images", "n_lesions", "n_melanoma", "n_melanoma_lesions"}
    entry_keys |= {"n_other_lesions", "note", *METRICS, *(f"{m}_ci95" for m in METRICS)}
    for block in section["variables"].values():
        assert set(block) == {"subgroups", "gaps"} and set(block["gaps"]) == set(METRICS)
        assert all(set(e) == entry_keys for e in block["subgroups"])
    assert set(section["overall"]) == entry_keys and section["overall"]["name"] == "all"
    names = [*_keys(section), *entry_keys, "value", "ci95", "higher", "lower"]
    undocumented = [k for k in names if not re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", DOC)]
    assert undocumented == []


def test_no_metadata_no_section_and_no_melanoma_class():
    truth, probs, groups, metadata = synthetic(n_lesions=60)
    kw = dict(groups=groups, operating_points=[], n_resamples=0, seed=0)
    assert subgroup_section(truth, probs, metadata.iloc[:, :0], **kw) is None
    other = {c: f"c{c}" for c in CLASSES}
    section = subgroup_section(
        truth.rename(columns=other), probs.rename(columns=other), metadata, **kw
    )
    assert section["melanoma"] is None
    assert section["overall"]["mel_auc"] is None and section["overall"]["balanced_accuracy"]
    assert section["overall"]["balanced_accuracy_ci95"] is None  # no bootstrap
    assert "n_melanoma" not in section["overall"]


def test_forest_plot_is_written(tmp_path):
    truth, probs, groups, metadata = synthetic(n_lesions=100)
    metadata = metadata.assign(age=np.resize(["25", "55", ""], len(truth)))
    section = subgroups_block(
        truth,
        probs,
        metadata,
        groups=groups,
        operating_points=[],
        n_resamples=30,
        seed=0,
        out=tmp_path,
        title="forest",
    )
    data = (tmp_path / "subgroups.png").read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["subgroups.png"]  # no temporary left
    rows = forest_table(section)
    n_rows = 1 + sum(len(v["subgroups"]) for v in section["variables"].values())
    assert rows["row"].nunique() == n_rows and rows["panel"].nunique() == len(METRICS)


def test_evaluate_reports_subgroups_of_data_with_metadata(workspace, tmp_path, capsys):
    """The demo data with metadata columns added: same fingerprint, so the member's own test
    split and cached predictions; metrics.json gets the section, the folder the forest plot."""
    demo = next((workspace / "data").glob("demo-v*"))
    folder = tmp_path / "with-metadata"
    folder.mkdir()
    (folder / "images").symlink_to(demo / "images", target_is_directory=True)
    meta = pd.read_csv(demo / "HAM10000_metadata.csv")
    lesion = meta["lesion_id"].str[-4:].astype(int)
    meta["sex"] = np.where(lesion % 2 == 0, "female", "male")
    meta["age"] = 20 + 10 * (lesion % 7)
    meta["localization"] = np.where(lesion % 3 == 0, "back", "trunk")
    meta["dx_type"] = "histo"
    meta.to_csv(folder / "HAM10000_metadata.csv", index=False)
    out = tmp_path / "evaluation"
    argv = ["evaluate", "small_cnn.demo.s0", "--data", f"ham10000:{folder}", "--out", str(out)]
    assert main([*argv, "--bootstrap", "50", "--workspace", str(workspace)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    member = json.loads((workspace / "members/small_cnn.demo.s0/member.json").read_text())
    assert metrics["data"]["fingerprint"] == member["data"]["fingerprint"]
    assert metrics["split"] == "test"
    section = metrics["subgroups"]
    assert section["format_version"] == 1
    assert set(section["variables"]) == {"sex", "age", "site", "confirmation"}
    assert section["overall"]["n_images"] == metrics["n_images"]
    assert (out / "subgroups.png").read_bytes()[:8] == PNG_MAGIC
    printed = capsys.readouterr().out
    assert "Subgroups" in printed and "female" in printed
