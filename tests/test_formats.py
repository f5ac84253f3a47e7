"""docs/formats.md stays true to the files zoo writes: every file and JSON key is documented."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from zoo.cli.main import main

pytestmark = pytest.mark.slow
DOC = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text(encoding="utf-8")
NAME = "small_cnn.demo.s0"


def undocumented(names) -> list[str]:
    """The names that docs/formats.md never mentions as a whole word."""
    return sorted(
        n for n in set(names) if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", DOC)
    )


def keys(data: dict, depth: int = 2) -> list[str]:
    """The keys of ``data`` and of its nested objects, ``depth`` levels down (class and member
    names, which are data, are left out by the callers' choice of depth)."""
    found = []
    for key, value in data.items():
        found.append(key)
        if depth > 1 and isinstance(value, dict):
            found += keys(value, depth - 1)
    return found


def files(folder: Path) -> list[str]:
    """The names in ``folder`` (cache entries in ``predictions/`` are checked by their keys)."""
    return [p.name for p in folder.iterdir()]


@pytest.fixture(scope="module")
def written(trained_workspace, tmp_path_factory) -> dict[str, Path]:
    """A member evaluated (with and without --task), predicted with --out, and an ensemble."""
    ws = tmp_path_factory.mktemp("formats") / "ws"
    shutil.copytree(trained_workspace, ws, ignore=shutil.ignore_patterns("evaluations"))
    base = ["--workspace", str(ws), "--quiet"]
    evaluation = ws / "evaluations" / "plain"
    assert main(["evaluate", NAME, "--bootstrap", "5", "--out", str(evaluation), *base]) == 0
    assert main(["evaluate", NAME, "--bootstrap", "5", "--task", "melanocytic", *base]) == 0
    spec = ws / "blend.toml"
    spec.write_text('members = ["*"]\ncombine = "mean"\ntta = "dihedral"\n')
    assert main(["ensemble", "build", str(spec), *base]) == 0
    csv = ws / "predicted.csv"
    assert main(["predict", "blend", str(ws / "data"), "--out", str(csv), *base]) == 0
    task = next((ws / "evaluations").glob("*-melanocytic"))
    return {"ws": ws, "evaluation": evaluation, "task": task, "csv": csv}


def test_member_files_and_keys_are_documented(written):
    member = written["ws"] / "members" / NAME
    info = json.loads((member / "member.json").read_text())
    assert undocumented(files(member)) == []
    assert undocumented(keys({k: v for k, v in info.items() if k != "config"})) == []
    assert undocumented(info["config"]["options"]) == []
    assert undocumented(keys(info["config"]["recipe"])) == []  # the recipe format section
    sidecar = json.loads((member / "predictions" / "test.dihedral.json").read_text())
    assert undocumented(sidecar) == []


def test_evaluation_files_and_metrics_keys_are_documented(written):
    for folder in (written["evaluation"], written["task"]):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert undocumented(files(folder)) == []
        assert undocumented(k for k in keys(metrics) if k not in metrics["classes"]) == []


def test_ensemble_and_predict_sidecar_keys_are_documented(written):
    built = written["ws"] / "ensembles" / "blend"
    info = json.loads((built / "ensemble.json").read_text())
    assert undocumented(files(built)) == []
    top = {k: v for k, v in info.items() if k not in ("weights", "data")}
    assert undocumented(keys(top)) == []
    assert undocumented(keys(info["members"][0])) == []
    sidecar = json.loads(Path(f"{written['csv']}.json").read_text())
    assert undocumented(k for k in keys(sidecar) if k != NAME) == []
