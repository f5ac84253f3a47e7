"""The leaderboard from a tiny workspace of demo-data members: files, tables, images."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from zoo.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def evaluated_workspace(tmp_path_factory) -> Path:
    """Two 1-epoch demo members, each evaluated raw / + prior correction / + TTA, and the
    steppan2020 ensemble built from them and evaluated."""
    from zoo import console
    from zoo.data import load_dataset
    from zoo.ensembles.build import build_ensemble
    from zoo.evaluate import evaluate_target
    from zoo.targets import resolve_target
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
            for tta, prior in (("none", False), ("none", True), ("dihedral", True)):
                evaluate_target(
                    target, data, tta=tta, prior_correction=prior, bootstrap=50, workspace=root
                )
        spec = (
            (REPO / "ensembles" / "steppan2020.toml").read_text().replace('"steppan"', '"dihedral"')
        )
        (root / "mean.toml").write_text(spec.replace('name = "steppan2020"', 'name = "mean"'))
        build_ensemble(root / "mean.toml", workspace=root)
        evaluate_target(resolve_target("mean", root), data, bootstrap=50, workspace=root)
    finally:
        console.set_quiet(False)
    return root


def test_leaderboard_files_tables_and_images(evaluated_workspace: Path, tmp_path: Path):
    out = tmp_path / "board"
    assert (
        main(["leaderboard", "--workspace", str(evaluated_workspace), "--out", str(out), "--quiet"])
        == 0
    )
    table = pd.read_csv(out / "leaderboard.csv")
    assert len(table) == 7  # 2 members × (raw, + prior correction, + TTA) + 1 ensemble
    assert list(table["balanced_accuracy"]) == sorted(table["balanced_accuracy"], reverse=True)
    assert set(table["step"]) >= {"raw", "+ prior correction", "+ TTA dihedral"}
    assert (table["kind"] == "ensemble").sum() == 1
    assert table[["balanced_accuracy", "macro_auc", "mel_auc"]].notna().all().all()
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
    assert page.count("<table>") == 3  # ranking, members step by step, ensembles
    assert "<h2>Ensembles</h2>" in page and "macro AUC 95 % CI" in page
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
