"""A full disk: each command that writes ends in one line and exit 2, leaves nothing
half-written, and runs again once space is freed (no stale lock, no damaged file).

The disk is a small tmpfs mounted for the test, so this needs the right to mount (root in a
container that allows it); elsewhere the tests skip and say so."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import DEMO_MEMBER, write_image
from faultkit import assert_refused, half_written, run_cli, snapshot

SIZE_MB = 128  # room for the copied workspace and a second training run once space is freed


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    mount = tmp_path_factory.mktemp("small-disk")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'not root'})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def full_workspace(small_disk, trained_workspace, tmp_path):
    """A copy of the demo workspace on the small disk (one evaluation done), and a function
    that fills the disk up to ``free`` bytes."""
    from zoo import console

    ws = small_disk / "ws"
    shutil.rmtree(ws, ignore_errors=True)
    # the member and its data only: other tests leave caches and exports in the shared workspace
    shutil.copytree(
        trained_workspace, ws, ignore=shutil.ignore_patterns("evaluations", "cache", "exports")
    )
    console.set_quiet(True)
    try:
        from zoo.cli.main import main

        assert main(["evaluate", DEMO_MEMBER, "--workspace", str(ws), "--bootstrap", "0"]) == 0
    finally:
        console.set_quiet(False)
    filler = small_disk / "filler"

    def fill(free: int) -> None:
        filler.unlink(missing_ok=True)
        stat = os.statvfs(small_disk)
        size = max(stat.f_bavail * stat.f_frsize - free, 0)
        with open(filler, "wb") as handle:
            handle.truncate(0)
            chunk = b"\0" * (1 << 20)
            while size > 0:
                size -= handle.write(chunk[: min(size, len(chunk))])

    yield ws, fill
    filler.unlink(missing_ok=True)
    shutil.rmtree(ws, ignore_errors=True)


def _images(folder: Path) -> Path:
    for i in range(3):
        write_image(folder / f"p{i}.png", size=40, seed=i)
    return folder


COMMANDS = {
    "train": lambda ws, tmp: [
        "train",
        "small_cnn",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--name",
        "again",
    ],
    "evaluate": lambda ws, tmp: ["evaluate", DEMO_MEMBER, "--bootstrap", "0", "--tta", "dihedral"],
    "calibrate": lambda ws, tmp: ["calibrate", DEMO_MEMBER],
    "ensemble build": lambda ws, tmp: ["ensemble", "build", _spec(ws)],
    "leaderboard": lambda ws, tmp: ["leaderboard", "--out", str(ws / "board")],
    "predict --out": lambda ws, tmp: [
        "predict",
        DEMO_MEMBER,
        str(_images(tmp / "in")),
        "--out",
        str(ws / "predictions.csv"),
    ],
    "export": lambda ws, tmp: [
        "export",
        DEMO_MEMBER,
        "--format",
        "keras",
        "--out",
        str(ws / "exported"),
    ],
}


def _spec(ws: Path) -> str:
    spec = ws.parent / "pair.toml"
    spec.write_text(f'name = "pair"\nmembers = ["{DEMO_MEMBER}"]\ncombine = "mean"\n')
    return str(spec)


@pytest.mark.slow
@pytest.mark.parametrize("free", [0, 64 << 10, 2 << 20], ids=["0B", "64KB", "2MB"])
@pytest.mark.parametrize("command", COMMANDS)
def test_full_disk_is_one_line_and_leaves_nothing_half_done(
    full_workspace, command, free, tmp_path, capsys
):
    ws, fill = full_workspace
    argv = [*COMMANDS[command](ws, tmp_path), "--workspace", str(ws)]
    before = snapshot(ws)
    fill(free)
    result = run_cli(argv, capsys)
    if result.code == 0:  # it fitted into what was left: nothing to check but the files
        fill(1 << 30)
        assert half_written(ws) == []
        return
    assert_refused(result, pattern=r"(?i)no space left|disk is full")
    after = snapshot(ws)
    assert {k: after[k] for k in before} == before, "a full disk changed files"
    added = sorted(set(after) - set(before))
    # the only files a failed command may leave are whole prediction-cache entries (each
    # table with its sidecar), which the next run reuses
    assert all("/predictions/" in name for name in added), added
    tables = {n.removesuffix(".csv") for n in added if n.endswith(".csv")}
    assert tables == {n.removesuffix(".json") for n in added if n.endswith(".json")}, added
    assert half_written(ws) == []
    fill(1 << 30)  # space again: the same command runs (no stale lock, nothing damaged)
    again = run_cli(argv, capsys)
    assert again.code == 0, again.err
