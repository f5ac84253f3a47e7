"""The leaderboard from a tiny workspace of demo-data members: files, tables, images."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browserkit import set_width
from PIL import Image
from sklearn.metrics import roc_auc_score

from zoo.cli.main import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def evaluated_workspace(tmp_path_factory) -> Path:
    """Two 1-epoch demo members, each evaluated raw / + prior correction / + TTA /
    + calibration, and the
    steppan2020 ensemble built from them and evaluated."""
    from zoo import console
    from zoo.data import load_dataset
    from zoo.ensembles.build import build_ensemble
    from zoo.ensembles.targets import resolve_target
    from zoo.evaluation.evaluate import evaluate_target
    from zoo.training.trainer import TrainOptions, train

    root = tmp_path_factory.mktemp("leaderboard")
    console.set_quiet(True)
    try:
        for seed in (0, 1):
            train(
                TrainOptions(recipe="small_cnn", workspace=root, image_size=32, epochs=1, seed=seed)
            )
        data = load_dataset("demo", workspace=root)
        for seed in (0, 1):
            target = resolve_target(f"small_cnn.demo.s{seed}", root)
            for tta, prior, calibrate in (
                ("none", False, False),
                ("none", True, False),
                ("dihedral", True, False),
                ("dihedral", True, True),
            ):
                evaluate_target(
                    target,
                    data,
                    tta=tta,
                    prior_correction=prior,
                    calibrate=calibrate,
                    bootstrap=50,
                    workspace=root,
                )
        spec = (
            (REPO / "ensembles" / "steppan2020.toml").read_text().replace('"steppan"', '"dihedral"')
        )
        (root / "mean.toml").write_text(spec.replace('name = "steppan2020"', 'name = "mean"'))
        build_ensemble(root / "mean.toml", workspace=root)
        photos = root / "elsewhere" / "photo"
        photos.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                photos / f"p{i}.png"
            )
        elsewhere = load_dataset(f"folder:{photos.parent}", workspace=root)
        evaluate_target(
            resolve_target("mean", root), data, bootstrap=50, ood_data=elsewhere, workspace=root
        )
    finally:
        console.set_quiet(False)
    return root


def read_frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image": str}).set_index("image")


def test_leaderboard_files_tables_and_images(evaluated_workspace: Path, tmp_path: Path):
    out = tmp_path / "board"
    assert (
        main(["leaderboard", "--workspace", str(evaluated_workspace), "--out", str(out), "--quiet"])
        == 0
    )
    table = pd.read_csv(out / "leaderboard.csv")
    assert len(table) == 9  # 2 members × (raw, + prior, + TTA, + calibration) + 1 ensemble
    assert list(table["balanced_accuracy"]) == sorted(table["balanced_accuracy"], reverse=True)
    steps = {"raw", "+ prior correction", "+ TTA dihedral", "+ calibration"}
    assert set(table["step"]) >= steps
    calibrated = table[table["calibrated"]]
    assert len(calibrated) == 3 and (calibrated["temperature"] > 0).all()
    assert table["ece"].notna().all() and (table["ece_low"] <= table["ece_high"]).all()
    for row in table.itertuples():  # recomputed from each evaluation's files (6 digits)
        folder = evaluated_workspace / "evaluations" / row.folder
        truth, predictions = (read_frame(folder / f) for f in ("truth.csv", "predictions.csv"))
        (point,) = [
            p
            for p in json.loads((folder / "metrics.json").read_text())["operating_points"]
            if p["spec"] == "mel:sensitivity=0.9"
        ]
        mel = truth.loc[predictions.index, "mel"].to_numpy() > 0.5
        flagged = predictions["mel"].to_numpy() >= point["threshold"]
        assert row.mel_threshold_at_sens_90 == pytest.approx(point["threshold"], rel=1e-5)
        assert row.mel_spec_at_sens_90 == pytest.approx((~flagged[~mel]).mean(), rel=1e-5)
        assert row.mel_sens_at_sens_90 == pytest.approx(flagged[mel].mean(), rel=1e-5)
    assert (table["mel_sens_at_sens_95"] >= 0).all()
    assert table["auc_mel"].notna().all() and (table["n_mel"] > 0).all()
    assert table.loc[table["kind"] == "ensemble", "weights"].str.contains(":0.5").all()
    confusion = pd.read_csv(out / "confusion.csv")
    assert confusion.groupby("folder")["count"].sum().eq(table["n_images"].iloc[0]).all()
    assert confusion["folder"].nunique() == 3
    assert (table["kind"] == "ensemble").sum() == 1
    assert table[["balanced_accuracy", "macro_auc", "mel_auc"]].notna().all().all()
    ensemble = table[table["kind"] == "ensemble"].iloc[0]
    folder = evaluated_workspace / "evaluations" / ensemble["folder"]
    scores = pd.read_csv(folder / "ood.csv")
    inside = (scores["set"] == "in").to_numpy()
    auroc = roc_auc_score(inside, scores["mahalanobis"])  # in-distribution is the positive
    assert ensemble["ood_auroc_mahalanobis"] == pytest.approx(auroc, rel=1e-5)
    threshold = json.loads((folder / "metrics.json").read_text())["ood"]["flag"]["threshold"]
    flagged = (scores["mahalanobis"] < threshold).to_numpy()
    assert ensemble["ood_flagged"] == pytest.approx(flagged[~inside].mean(), rel=1e-5, abs=1e-12)
    assert ensemble["in_flagged"] == pytest.approx(flagged[inside].mean(), rel=1e-5, abs=1e-12)
    assert ensemble["ood_data"] == "elsewhere"  # the OOD data set's name
    assert table.loc[table["kind"] == "member", "ood_auroc_mahalanobis"].isna().all()
    assert "OOD AUROC" in (out / "index.html").read_text()
    assert (table["ba_low"] <= table["balanced_accuracy"] + 1e-12).all()
    assert (table["macro_auc_low"] <= table["macro_auc"] + 1e-12).all()
    assert (table["mel_auc_high"] >= table["mel_auc"] - 1e-12).all()
    markdown = (out / "leaderboard.md").read_text()
    for heading in (
        "## Ranking",
        "## Members step by step",
        "## Ensembles",
        "## Published numbers",
    ):
        assert heading in markdown
    assert "measured on other data" in markdown
    page = (out / "index.html").read_text()
    assert page.count('<table id="ranking"') == 1  # one ranking, the step as a column
    # per class + confusion + operating points of the top 3
    assert page.count('<table class="compact">') == 9
    assert "<h2>Ensembles</h2>" in page and "mel spec. at 90 % sens." in page
    assert "weight 0.500" in page and "commit" in page and "http" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3  # bar chart, melanoma ROC, melanocytic sensitivity–specificity
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    for png in ("balanced_accuracy.png", "roc_melanoma.png", "melanocytic_sens_spec.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")


def test_leaderboard_without_evaluations_is_a_clear_error(tmp_path: Path, capsys):
    assert main(["leaderboard", "--workspace", str(tmp_path)]) == 2
    assert "run zoo evaluate" in capsys.readouterr().err


def test_leaderboard_unknown_data_name(evaluated_workspace: Path, tmp_path: Path, capsys):
    copy = tmp_path / "ws"
    shutil.copytree(evaluated_workspace / "evaluations", copy / "evaluations")
    assert main(["leaderboard", "--workspace", str(copy), "--data", "nonesuch"]) == 2
    assert "nonesuch" in capsys.readouterr().err


def test_leaderboard_json_and_default_folder(evaluated_workspace: Path, tmp_path: Path, capsys):
    """Without --out the files go to <workspace>/leaderboard; --json prints the ranking as
    leaderboard.csv holds it, and nothing else, on stdout."""
    import json

    copy = tmp_path / "ws"
    shutil.copytree(evaluated_workspace / "evaluations", copy / "evaluations")
    assert main(["leaderboard", "--workspace", str(copy), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    table = pd.read_csv(copy / "leaderboard" / "leaderboard.csv")
    assert [r["entry"] for r in rows] == list(table["entry"])
    assert [r["balanced_accuracy"] for r in rows] == pytest.approx(table["balanced_accuracy"])
    assert main(["leaderboard", "--workspace", str(copy), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")


# --- the page in a real browser -------------------------------------------------------------

OVERFLOWS = """
const width = document.documentElement.clientWidth;
const wide = [];
document.querySelectorAll('table').forEach(function(t, i){
  const box = t.getBoundingClientRect();
  if (box.right > width + 1 || t.scrollWidth > t.clientWidth + 1) wide.push(i + ':' + box.right);
});
if (document.documentElement.scrollWidth > width + 1) wide.push('page');
return wide;
"""


def column(driver, index: int) -> list[float]:
    cells = driver.find_elements("css selector", f"#ranking tbody tr td:nth-child({index + 1})")
    return [float(c.get_attribute("data-value")) for c in cells]


def with_subgroups(workspace: Path, tmp_path: Path) -> Path:
    """A copy of ``workspace`` whose evaluations hold a subgroup section, as an evaluation of
    data with metadata has (sex and age made up from the image ids)."""
    import json

    from zoo.evaluation.subgroups import subgroups_block

    copy = tmp_path / "with-subgroups"
    shutil.copytree(workspace, copy)
    for file in (copy / "evaluations").glob("*/metrics.json"):
        metrics = json.loads(file.read_text())
        truth = read_frame(file.parent / "truth.csv").drop(columns="score_weight", errors="ignore")
        probs = read_frame(file.parent / "predictions.csv")[list(truth.columns)]
        number = np.arange(len(truth))
        metadata = pd.DataFrame(
            {"sex": np.where(number % 2, "male", "female"), "age": 20 + 15 * (number % 4)},
            index=truth.index,
        )
        metrics["subgroups"] = subgroups_block(
            truth,
            probs,
            metadata,
            groups=None,
            operating_points=metrics.get("operating_points") or [],
            n_resamples=50,
            seed=0,
            out=tmp_path,
            title=file.parent.name,
        )
        file.write_text(json.dumps(metrics))
    return copy


def test_page_shows_the_top_entries_subgroups(evaluated_workspace: Path, tmp_path: Path):
    """A subgroup table and forest plot per top entry, the table's figures those of the
    evaluation's subgroup section."""
    import json

    workspace = with_subgroups(evaluated_workspace, tmp_path)
    out = tmp_path / "board"
    assert main(["leaderboard", "--workspace", str(workspace), "--out", str(out), "--quiet"]) == 0
    page = (out / "index.html").read_text()
    assert "<h2>Subgroups of the top entries</h2>" in page
    assert sorted(p.name for p in out.glob("subgroups-*.png")) == [
        f"subgroups-{k}.png" for k in (1, 2, 3)
    ]
    best = pd.read_csv(out / "leaderboard.csv")["folder"].iloc[0]
    section = json.loads((workspace / "evaluations" / best / "metrics.json").read_text())[
        "subgroups"
    ]
    parser = _Tables()
    parser.feed(page[page.index("Subgroups of the top entries") :])
    table = parser.tables[0]
    assert table[0][:4] == ["variable", "subgroup", "images", "lesions"]
    rows = {(r[0], r[1]): r for r in table[1:]}
    female = next(e for e in section["variables"]["sex"]["subgroups"] if e["name"] == "female")
    got = rows[("sex", "female")]
    assert int(got[2]) == female["n_images"]
    assert float(got[4].split()[0]) == pytest.approx(female["balanced_accuracy"], abs=5e-4)
    assert ("sex", "largest gap") in rows


@pytest.mark.browser
def test_page_sorts_and_fits_in_a_browser(
    evaluated_workspace: Path, tmp_path: Path, headless_chromium
):
    browser = headless_chromium
    out = tmp_path / "board"
    workspace = with_subgroups(evaluated_workspace, tmp_path)  # the page with every section
    assert main(["leaderboard", "--workspace", str(workspace), "--out", str(out), "--quiet"]) == 0
    browser.get((out / "index.html").as_uri())
    set_width(browser, 1400)
    headers = [
        h.get_attribute("textContent") for h in browser.find_elements("css selector", "#ranking th")
    ]
    ba = next(i for i, h in enumerate(headers) if h.startswith("balanced acc."))
    assert column(browser, ba) == sorted(column(browser, ba), reverse=True)
    header = browser.find_elements("css selector", "#ranking th")[ba]
    header.click()
    assert column(browser, ba) == sorted(column(browser, ba))
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert column(browser, ba) == sorted(column(browser, ba), reverse=True)
    for width in (1400, 414):
        set_width(browser, width)
        assert browser.execute_script(OVERFLOWS) == [], f"a table overflows at {width} px"
    browser.find_element("id", "filter").send_keys("ensemble")
    shown = [
        r for r in browser.find_elements("css selector", "#ranking tbody tr") if r.is_displayed()
    ]
    assert shown and all("ensemble" in r.text for r in shown)


def test_targets_are_found_by_name_in_the_workspace_not_by_recorded_path(
    evaluated_workspace: Path, tmp_path: Path
):
    """metrics.json records the target's absolute path; the leaderboard never follows it (a
    moved or shared workspace, or a tampered record, would lead it elsewhere) but looks the
    target up by its checked name in the workspace that holds the evaluation."""
    import json

    moved = tmp_path / "moved"
    shutil.copytree(evaluated_workspace, moved)
    seconds = {}
    for member in (moved / "members").iterdir():
        record = json.loads((member / "member.json").read_text())
        record["training"]["seconds"] = seconds[member.name] = 600.0 * (1 + len(seconds))
        (member / "member.json").write_text(json.dumps(record))
    for metrics in (moved / "evaluations").glob("*/metrics.json"):
        record = json.loads(metrics.read_text())
        record["target"]["path"] = "/nonexistent/elsewhere"
        metrics.write_text(json.dumps(record))
    assert main(["leaderboard", "--workspace", str(moved), "--quiet"]) == 0
    table = pd.read_csv(moved / "leaderboard" / "leaderboard.csv").set_index("entry")
    for row in table.itertuples():
        name = row.Index.split(" ")[0]
        expected = sum(seconds.values()) if name == "mean" else seconds[name]
        assert row.train_minutes == pytest.approx(expected / 60)


class _Tables(HTMLParser):
    """The page's compact tables as lists of rows of cell texts (intervals included)."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and "compact" in (dict(attrs).get("class") or "").split():
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_page_per_class_rates_agree_with_the_confusion_matrix(
    evaluated_workspace: Path, tmp_path: Path
):
    """The per-class sensitivity and specificity are the argmax decision's, as in the
    confusion matrix beside them, with an interval each; every validation-chosen point shows
    the sensitivity and the specificity it reached."""
    out = tmp_path / "board"
    assert main(["leaderboard", "--workspace", str(evaluated_workspace), "--out", str(out)]) == 0
    parser = _Tables()
    parser.feed((out / "index.html").read_text())
    for per_class, confusion, points in zip(*[iter(parser.tables)] * 3, strict=True):
        assert per_class[0][2:4] == ["sens. (95 % CI)", "spec. (95 % CI)"]
        predicted = confusion[0][1:]
        counts = {row[0]: [int(v) for v in row[1:]] for row in confusion[1:]}
        total = sum(map(sum, counts.values()))
        for row in per_class[1:]:
            c, sens, spec = row[0], row[2], row[3]
            hits = counts[c][predicted.index(c)]
            called = sum(r[predicted.index(c)] for r in counts.values())
            negatives = total - sum(counts[c])
            assert float(sens.split()[0]) == pytest.approx(hits / sum(counts[c]), abs=5e-4)
            assert float(spec.split()[0]) == pytest.approx(
                1 - (called - hits) / negatives, abs=5e-4
            )
            assert re.search(r"\(\d\.\d{3}–\d\.\d{3}\)", sens + spec)
        assert len(points) > 1
        for row in points[1:]:
            assert re.fullmatch(r"\d\.\d{3}( \(\d\.\d{3}–\d\.\d{3}\))?", row[3]), row
            assert re.fullmatch(r"\d\.\d{3}( \(\d\.\d{3}–\d\.\d{3}\))?", row[4]), row
