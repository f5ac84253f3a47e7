"""zoo writes only inside its workspace or at the ``--out`` given, never over what it did not
write: each command that fills an output folder or file, pointed at a user's folder or file,
a file, a device or zoo's own files, is refused in one line and nothing changes; a folder zoo
wrote is replaced whole; every file follows the user's umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from faultkit import MEMBER, assert_refused, half_written, run_cli, snapshot

from zoo import console
from zoo.store.outputs import MARKER_FILE
from zoo.store.records import OutputMarker


@pytest.fixture(autouse=True)
def _console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(console, "_quiet", False)


def user_folder(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def images(workspace: Path, n: int = 1) -> list[Path]:
    return sorted((workspace / "data").glob("*/images/*.png"))[:n]


EVALUATE = ["evaluate", MEMBER, "--bootstrap", "0", "--quiet"]
CASES = {
    "evaluate into a folder with metrics.json and notes.txt": (
        {"metrics.json": "{}", "notes.txt": "keep me"},
        EVALUATE,
        ["notes.txt"],
    ),
    "export into a folder with an empty signature.json": (
        {"signature.json": ""},
        ["export", MEMBER, "--format", "keras"],
        ["signature.json"],
    ),
    "leaderboard into a folder with the user's index.html": (
        {"index.html": "<h1>my page</h1>"},
        ["leaderboard"],
        ["index.html"],
    ),
    "explain into a folder with the user's files": (
        {"explain.csv": "mine", "photo.png": "mine"},
        ["explain", MEMBER, "{image}", "--method", "saliency"],
        ["explain.csv"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_user_folder_is_refused_and_kept(case, workspace, tmp_path, capsys):
    files, argv, named = CASES[case]
    folder = user_folder(tmp_path / "mine", files)
    before = snapshot(tmp_path)
    argv = [a.format(image=images(workspace)[0]) for a in argv]
    result = run_cli([*argv, "--out", folder, "--workspace", workspace], capsys)
    assert_refused(result, str(folder.resolve()), *named, pattern="give a new or empty folder")
    assert snapshot(tmp_path) == before and half_written(tmp_path) == []


@pytest.mark.parametrize(
    "argv",
    [["leaderboard"], ["explain", MEMBER, "{image}", "--method", "gradcam"], EVALUATE],
    ids=["leaderboard", "explain", "evaluate"],
)
def test_out_onto_a_file_is_refused_in_one_line(argv, workspace, tmp_path, capsys):
    file = tmp_path / "report.txt"
    file.write_text("the user's file\n")
    argv = [a.format(image=images(workspace)[0]) for a in argv]
    result = run_cli([*argv, "--out", file, "--workspace", workspace], capsys)
    assert_refused(result, str(file.resolve()), "is a file")
    assert file.read_text() == "the user's file\n" and half_written(tmp_path) == []


@pytest.mark.parametrize("name", ["model.keras", "member.json", "predictions/test.csv"])
def test_predict_out_onto_a_members_file_is_refused(name, workspace, capsys):
    target = workspace / "members" / MEMBER / name
    before = snapshot(workspace)
    argv = ["predict", MEMBER, images(workspace)[0], "--out", target, "--workspace", workspace]
    result = run_cli(argv, capsys)
    assert_refused(result, "--out", "inside the workspace's members/ folder")
    assert snapshot(workspace) == before


def test_predict_out_onto_a_device_or_a_users_file_is_refused(workspace, tmp_path, capsys):
    argv = ["predict", MEMBER, images(workspace)[0], "--workspace", workspace, "--out"]
    assert_refused(run_cli([*argv, os.devnull], capsys), os.devnull, "not a regular file")
    mine = tmp_path / "results.csv"
    mine.write_text("my own results\n")
    assert_refused(run_cli([*argv, mine], capsys), str(mine), "zoo did not write it")
    assert mine.read_text() == "my own results\n"
    ours = tmp_path / "predictions.csv"
    for _ in range(2):  # its own earlier file, recorded by its sidecar, is replaced
        result = run_cli([*argv, ours, "--quiet"], capsys)
        assert result.code == 0, result.err


def test_explain_twice_replaces_its_own_folder(workspace, tmp_path, capsys):
    out = tmp_path / "maps"
    first, second = images(workspace, 2)
    argv = ["explain", MEMBER, "--workspace", workspace, "--out", out, "--quiet"]
    assert run_cli([*argv[:2], first, *argv[2:], "--method", "saliency"], capsys).code == 0
    result = run_cli([*argv[:2], second, *argv[2:], "--method", "gradcam"], capsys)
    assert result.code == 0, result.err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [MARKER_FILE, "explain.csv", f"{second.stem}.gradcam.npy", f"{second.stem}.gradcam.png"]
    )
    assert OutputMarker.load(out / MARKER_FILE).kind == "explain"
    assert (out / "explain.csv").read_text().count("\n") == 2  # header and the second image
    result = run_cli([*EVALUATE, "--out", out, "--workspace", workspace], capsys)
    assert_refused(result, "holds an explanation", "not an evaluation")


@pytest.mark.slow
def test_an_evaluation_from_before_the_marker_is_replaced_in_the_workspace(workspace, capsys):
    """Existing workspaces keep working: their evaluation folders hold only zoo's files."""
    argv = [*EVALUATE, "--workspace", workspace]
    assert run_cli(argv, capsys).code == 0
    (folder,) = (workspace / "evaluations").iterdir()
    (folder / MARKER_FILE).unlink()  # as written before the marker existed
    assert run_cli(argv, capsys).code == 0
    assert OutputMarker.load(folder / MARKER_FILE).kind == "evaluation"
    (folder / MARKER_FILE).unlink()
    (folder / "notes.txt").write_text("mine")
    assert_refused(run_cli(argv, capsys), "notes.txt", "not an evaluation")
    assert (folder / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_every_file_written_follows_the_umask(workspace, tmp_path, capsys):
    """CSVs, JSON, plots (once 0600) and folders alike: 0640 / 0750 under umask 027."""
    old = os.umask(0o027)
    try:
        out = tmp_path / "eval"
        result = run_cli([*EVALUATE, "--out", out, "--workspace", workspace], capsys)
        assert result.code == 0, result.err
        csv = tmp_path / "p.csv"
        argv = ["predict", MEMBER, images(workspace)[0], "--out", csv, "--quiet"]
        assert run_cli([*argv, "--workspace", workspace], capsys).code == 0
    finally:
        os.umask(old)
    files = [*out.iterdir(), csv, csv.with_name("p.csv.json")]
    assert {p.suffix for p in files} >= {".csv", ".png", ".json"}
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o640"}, modes
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert json.loads((out / MARKER_FILE).read_text())["kind"] == "evaluation"
