"""zoo.store.outputs: zoo replaces only output folders and files it wrote; every file and
folder it creates follows the user's umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.store import locks
from zoo.store.outputs import (
    MARKER_FILE,
    claim_output_file,
    claim_output_folder,
    mark_output_folder,
    output_folder,
)
from zoo.store.records import OutputMarker
from zoo.store.workspace import atomic_directory, atomic_path, atomic_write_json

LEGACY = ("metrics.json", "truth.csv")


def folder_with(path: Path, **files: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name.replace("_", ".")).write_text(text)
    return path


# --- folders ---------------------------------------------------------------------------------


def test_an_absent_or_empty_folder_is_claimed(tmp_path):
    assert claim_output_folder(tmp_path / "new", "evaluation") == (tmp_path / "new").resolve()
    (tmp_path / "empty").mkdir()
    assert claim_output_folder(tmp_path / "empty", "explain") == (tmp_path / "empty").resolve()


def test_a_folder_zoo_marked_is_replaced_whole_and_marked_again(tmp_path):
    out = tmp_path / "eval"
    with output_folder(out, "evaluation", written_by="test") as tmp:
        (tmp / "metrics.json").write_text("{}")
        (tmp / "roc.png").write_bytes(b"png")
    marker = OutputMarker.load(out / MARKER_FILE)
    assert marker.kind == "evaluation" and marker.files == ["metrics.json", "roc.png"]
    with output_folder(out, "evaluation", written_by="test") as tmp:
        (tmp / "metrics.json").write_text('{"again": 1}')
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE, "metrics.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]  # no temporaries left


@pytest.mark.parametrize(
    ("files", "kind", "words"),
    [
        ({"metrics_json": "{}", "notes_txt": "mine"}, "evaluation", ["notes.txt", "no .zoo"]),
        ({"signature_json": ""}, "export", ["not an export (signature.json"]),
        ({"index_html": "<p>mine</p>"}, "leaderboard", ["not a leaderboard (index.html"]),
    ],
)
def test_a_user_folder_is_refused_whatever_its_file_names(tmp_path, files, kind, words):
    folder = folder_with(tmp_path / "mine", **files)
    with pytest.raises(ZooError) as caught:
        claim_output_folder(folder, kind, legacy=LEGACY)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message and "new or empty folder" in message
    assert all(w in message for w in words), message


def test_a_file_a_foreign_entry_or_another_kind_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ZooError, match=r"--out .*file is a file; give a folder"):
        claim_output_folder(tmp_path / "file", "leaderboard")
    out = tmp_path / "explained"
    with output_folder(out, "explain", written_by="zoo explain") as tmp:
        (tmp / "explain.csv").write_text("image\n")
    with pytest.raises(ZooError, match=r"holds an explanation \(zoo explain\), not an evaluation"):
        claim_output_folder(out, "evaluation")
    (out / "notes.txt").write_text("added by the user")
    with pytest.raises(ZooError, match=r"\(notes.txt\): zoo did not write them \(its .zoo-output"):
        claim_output_folder(out, "explain")
    (out / "notes.txt").unlink()
    (out / MARKER_FILE).write_text('{"kind": "explain"}')
    with pytest.raises(ZooError, match=r"its marker .*\.zoo-output\.json is damaged"):
        claim_output_folder(out, "explain")


def test_a_folder_from_before_the_marker_is_claimed_inside_the_workspace_only(tmp_path):
    ws = tmp_path / "ws"
    inside = folder_with(ws / "evaluations" / "old", metrics_json="{}", truth_csv="image\n")
    outside = folder_with(tmp_path / "old", metrics_json="{}", truth_csv="image\n")
    assert claim_output_folder(inside, "evaluation", workspace=ws, legacy=LEGACY) == inside
    with pytest.raises(ZooError, match="not an evaluation"):
        claim_output_folder(outside, "evaluation", workspace=ws, legacy=LEGACY)
    (inside / "notes.txt").write_text("mine")
    with pytest.raises(ZooError, match="notes.txt"):
        claim_output_folder(inside, "evaluation", workspace=ws, legacy=LEGACY)


def test_the_marker_lists_what_was_written(tmp_path):
    folder = folder_with(tmp_path / "x", a_csv="1", b_png="2")
    mark_output_folder(folder, "leaderboard", written_by="zoo leaderboard")
    data = json.loads((folder / MARKER_FILE).read_text())
    assert data["format_version"] == 1 and data["kind"] == "leaderboard"
    assert data["files"] == ["a.csv", "b.png"] and data["written_by"] == "zoo leaderboard"


# --- files -----------------------------------------------------------------------------------


def sidecar(csv: Path) -> Path:
    return csv.with_name(csv.name + ".json")


def test_an_output_file_zoo_did_not_write_is_refused(tmp_path):
    ws = tmp_path / "ws"
    model = ws / "members" / "m" / "model.keras"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"model")
    for target in (model, model.with_name("member.json"), ws / "evaluations" / "new.csv"):
        with pytest.raises(ZooError, match=r"inside the workspace's \w+/ folder"):
            claim_output_file(target, sidecar=sidecar(target), workspace=ws)
    assert model.read_bytes() == b"model"
    assert claim_output_file(ws / "p.csv", sidecar=sidecar(ws / "p.csv"), workspace=ws)
    mine = tmp_path / "mine.csv"
    mine.write_text("the user's table\n")
    with pytest.raises(ZooError, match=r"exists and zoo did not write it \(there is no mine"):
        claim_output_file(mine, sidecar=sidecar(mine))
    with pytest.raises(ZooError, match="not a regular file"):
        claim_output_file(Path(os.devnull), sidecar=tmp_path / "null.json")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(ZooError, match="not a regular file"):
        claim_output_file(fifo, sidecar=sidecar(fifo))


def test_an_earlier_prediction_is_replaced_unless_it_changed(tmp_path):
    import hashlib

    csv = tmp_path / "p.csv"
    csv.write_text("image,a,b\nx,0.5,0.5\n")
    record = {
        "predictions": "p.csv",
        "sha256": hashlib.sha256(csv.read_bytes()).hexdigest(),
        "target": {"name": "m", "kind": "member", "path": "/ws/members/m"},
        "classes": ["a", "b"],
        "n_images": 1,
    }
    sidecar(csv).write_text(json.dumps(record))
    assert claim_output_file(csv, sidecar=sidecar(csv)) == csv
    csv.write_text("image,a,b\nx,0.9,0.1\nedited by hand\n")
    with pytest.raises(ZooError, match="changed since zoo wrote it"):
        claim_output_file(csv, sidecar=sidecar(csv))
    sidecar(csv).write_text(json.dumps({**record, "target": {"name": "../../x"}}))
    with pytest.raises(ZooError, match="is not a record zoo wrote"):
        claim_output_file(csv, sidecar=sidecar(csv))


# --- permissions -----------------------------------------------------------------------------


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_and_folder_follows_the_umask(tmp_path, umask_027):
    """The umask of the moment (not the one at import), for each way zoo writes."""
    from zoo.scoring.plots import plot_bars_with_ci

    atomic_write_json(tmp_path / "r.json", {"a": 1})
    with atomic_path(tmp_path / "m.npy", suffix=".npy") as tmp:
        tmp.write_bytes(b"x")
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("x")
    plot_bars_with_ci(["a"], [0.5], [(0.4, 0.6)], tmp_path / "bars.png", xlabel="x")
    with locks.hold(tmp_path / "d", what="test") as lock:
        assert mode(lock) == 0o640
    for name in ("r.json", "m.npy", "bars.png", "d/f"):
        assert mode(tmp_path / name) == 0o640, name
    assert mode(tmp_path / "d") == 0o750
