"""The mutation table: every record zoo writes, damaged each way, read by every command that
reads it.

One tiny workspace is prepared once (the session's trained member, an ensemble of it, its
evaluation, an interrupted run's ``state.json`` and a lock file) and copied per case. Each
case damages one record one way (truncated, emptied, a wrong type, a value out of range, NaN,
a path-like name, …), runs one command, and checks the answer the command owes:

- ``refused``: exit status 2 and one ``error:`` line naming the file, no traceback;
- ``skipped``: the leaderboard's answer to a damaged ``metrics.json``: a warning naming the
  file, then (no other evaluation is left) exit status 2 with one ``error:`` line;
- ``listed``: ``zoo members`` and ``zoo leaderboard`` go on (exit 0) with one warning naming
  the file, as documented;
- ``recomputed``: a damaged prediction-cache sidecar is a cache miss: the entry is computed
  again and its sidecar written whole.

In every case nothing outside the workspace changed, nothing inside it changed beyond what
the outcome allows, no temporary or lock file is left, and nothing named after a path-like
name appeared anywhere.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from faultkit import MEMBER, assert_refused, half_written, run_cli, snapshot

from zoo import console
from zoo.store import (
    CacheRecord,
    EnsembleRecord,
    EvaluationRecord,
    MemberRecord,
    read_predictions,
)
from zoo.store.records import LockRecord, RunStateRecord

RUN = "small_cnn.demo.resumed"
EVALUATION = f"{MEMBER}-demo-test"
ESCAPED = "escaped"  # every path-like name ends in it: nothing so named may appear


# --- the records and how to damage them ------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One file zoo writes: where it is in the workspace, its schema, and its edits."""

    path: str
    kind: type
    edits: dict[str, tuple[str, object]]  # mutation kind → (dotted key, new value)


ABSOLUTE = "{root}/outside/" + ESCAPED  # a path-like name that is an absolute path
RELATIVE = "../" + ESCAPED  # … and one that climbs out of its folder

RECORDS = {
    "member.json": Record(
        f"members/{MEMBER}/member.json",
        MemberRecord,
        {
            "wrong type": ("input.size", "big"),
            "out of range": ("input.size", -5),
            "NaN": ("priors.effective.0", math.nan),
            "wrong length": ("priors.effective", [0.5, 0.5]),
            "no classes": ("classes", []),
            "absolute name": ("name", ABSOLUTE),
            "relative name": ("name", RELATIVE),
        },
    ),
    "ensemble.json": Record(
        "ensembles/pair/ensemble.json",
        EnsembleRecord,
        {
            "wrong type": ("weights", "heavy"),
            "out of range": (
                "operating_point",
                {"class": "mel", "criterion": "sensitivity", "value": 0.9, "threshold": -1},
            ),
            "NaN": (
                "operating_point",
                {"class": "mel", "criterion": "sensitivity", "value": 0.9, "threshold": math.nan},
            ),
            "absolute name": ("name", ABSOLUTE),
            "relative member name": ("members.0.name", RELATIVE),
        },
    ),
    "metrics.json": Record(
        f"evaluations/{EVALUATION}/metrics.json",
        EvaluationRecord,
        {
            "wrong type": ("aggregate.balanced_accuracy", "high"),
            "out of range": ("operating_points.0.threshold", -1),
            "NaN": ("per_category.auc.mel", math.nan),
            "absolute name": ("target.name", ABSOLUTE),
            "argmax out of range": ("argmax.sensitivity.mel", 1.5),
            "argmax interval of one": ("argmax.specificity_ci95.nv", [0.5]),
        },
    ),
    "prediction sidecar": Record(
        f"members/{MEMBER}/predictions/test.json",
        CacheRecord,
        {
            "wrong type": ("n_images", "many"),
            "out of range": ("n_images", -1),
            "NaN": ("seconds", math.nan),
            "relative name": ("key", "../../" + ESCAPED),
        },
    ),
    "lock file": Record(
        f"evaluations/.{EVALUATION}.lock",
        LockRecord,
        {
            "wrong type": ("pid", "me"),
            "out of range": ("pid", 2**70),
            "NaN": ("pid", math.nan),
        },
    ),
    "state.json": Record(
        f"runs/{RUN}/state.json",
        RunStateRecord,
        {
            "wrong type": ("epochs_done", "two"),
            "out of range": ("epochs_done", -1),
            "NaN": ("best_score", math.nan),
            "absolute name": ("name", ABSOLUTE),
        },
    ),
}
BYTES = {"truncate": lambda data: data[: len(data) // 2], "empty": lambda data: b""}


# --- the commands that read them -------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    outcome: str  # refused, skipped, listed or recomputed
    changes: tuple[str, ...] = ()  # folders of the workspace the command may change


PREDICT = ("predict", MEMBER, "{image}", "--ood-scores", "--out", "{root}/outside/p.csv")
EVALUATE = ("evaluate", MEMBER, "--bootstrap", "0")
READERS: dict[str, dict[str, Command]] = {
    "member.json": {
        "evaluate": Command(EVALUATE, "refused"),
        "predict": Command(PREDICT, "refused"),
        "members": Command(("members",), "listed"),
        "ensemble build": Command(("ensemble", "build", "{root}/outside/again.toml"), "refused"),
        "leaderboard": Command(("leaderboard",), "listed", ("leaderboard",)),
    },
    "ensemble.json": {
        "evaluate": Command(("evaluate", "pair", "--bootstrap", "0"), "refused"),
        "predict": Command(("predict", "pair", "{image}"), "refused"),
    },
    "metrics.json": {"leaderboard": Command(("leaderboard",), "skipped")},
    "prediction sidecar": {
        "evaluate": Command(
            (*EVALUATE, "--quiet"),
            "recomputed",
            (f"members/{MEMBER}/predictions", f"evaluations/{EVALUATION}"),
        )
    },
    "lock file": {"evaluate": Command(EVALUATE, "refused")},
    "state.json": {
        "train --resume": Command(
            ("train", "small_cnn", "--name", RUN, "--image-size", "32", "--epochs", "1")
            + ("--resume",),
            "refused",
        )
    },
}

CASES = [
    pytest.param(
        record,
        mutation,
        command,
        # a cache miss runs the model and writes a whole evaluation: a few seconds each
        marks=[pytest.mark.slow] if READERS[record][command].outcome == "recomputed" else [],
    )
    for record, spec in RECORDS.items()
    for mutation in [*BYTES, *spec.edits]
    for command in READERS[record]
]


# --- the workspace ---------------------------------------------------------------------------


def _state(member_json: Path) -> dict:
    """A ``state.json`` as the trainer writes it after epoch 1 of 2 (from the member's own
    recipe and split)."""
    info = json.loads(member_json.read_text())
    return {
        "name": RUN,
        "options": {"image_size": 32, "epochs": 2},
        "recipe": info["config"]["recipe"],
        "weights": "none",
        "split": info["split"],
        "fingerprint": info["data"]["fingerprint"],
        "epochs_done": 1,
        "best_epoch": 1,
        "best_score": 0.5,
        "epochs_since_best": 0,
        "history": [{"epoch": 1, "loss": 1.0}],
        "seconds": 3.0,
    }


@pytest.fixture(scope="module")
def template(trained_workspace, tmp_path_factory) -> Path:
    """The session's member, an ensemble of it, its evaluation and an interrupted run's
    ``state.json``."""
    root = tmp_path_factory.mktemp("mutations")
    ws = root / "ws"
    shutil.copytree(trained_workspace, ws, ignore=shutil.ignore_patterns("evaluations"))
    spec = root / "pair.toml"
    spec.write_text('name = "pair"\nmembers = ["*"]\ncombine = "mean"\n')
    console.set_quiet(True)
    try:
        from zoo.cli.main import main

        assert main(["ensemble", "build", str(spec), "--workspace", str(ws), "--quiet"]) == 0
        assert main([*EVALUATE, "--workspace", str(ws), "--quiet"]) == 0
    finally:
        console.set_quiet(False)
    state = ws / RECORDS["state.json"].path
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps(_state(ws / RECORDS["member.json"].path)))
    return ws


def _lock(ws: Path) -> Path:
    """A lock beside the evaluation held by this process (alive, so never stale)."""
    lock = LockRecord(pid=os.getpid(), host=socket.gethostname(), what="zoo evaluate (test)")
    file = ws / RECORDS["lock file"].path
    file.write_text(json.dumps(lock.to_dict()))
    return file


def _copy(template: Path, root: Path) -> Path:
    """The template's workspace under ``root/ws`` (its data linked, not copied)."""
    ws = root / "ws"
    shutil.copytree(template, ws, ignore=shutil.ignore_patterns("data"))
    (ws / "data").mkdir()
    for entry in (template / "data").iterdir():
        (ws / "data" / entry.name).symlink_to(entry, target_is_directory=True)
    for file in (ws / "evaluations").glob("*/metrics.json"):  # it records the target's path
        file.write_text(file.read_text().replace(str(template), str(ws)))
    return ws


def _set(data: dict, dotted: str, value) -> None:
    *parents, last = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    for key in parents:
        data = data[key]
    data[last] = value


def _damage(file: Path, mutation: str, spec: Record, root: Path) -> None:
    raw = file.read_bytes()
    if mutation in BYTES:
        file.write_bytes(BYTES[mutation](raw))
        return
    data = json.loads(raw)
    key, value = spec.edits[mutation]
    if isinstance(value, str):
        value = value.format(root=root)
    _set(data, key, value)
    file.write_text(json.dumps(data))  # NaN is written as the bare word NaN, as json does


@pytest.fixture(autouse=True)
def _console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(console, "_quiet", False)


def _without(tree: dict[str, str], folders: tuple[str, ...]) -> dict[str, str]:
    prefixes = tuple(f"ws/{f}/" for f in folders)
    return {k: v for k, v in tree.items() if not k.startswith(prefixes)}


# --- the table -------------------------------------------------------------------------------


def test_every_record_in_the_table_is_valid_before_it_is_damaged(template, tmp_path):
    ws = _copy(template, tmp_path)
    _lock(ws)
    for spec in RECORDS.values():
        spec.kind.load(ws / spec.path)
    assert len(CASES) >= 70, len(CASES)


@pytest.mark.parametrize(("record", "mutation", "command"), CASES)
def test_a_damaged_record_is_answered_in_one_line_and_nothing_escapes(
    template, tmp_path, capsys, record, mutation, command
):
    root = tmp_path.resolve()
    ws = _copy(template, root)
    outside = root / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text("the user's own file\n")
    (outside / "again.toml").write_text('name = "again"\nmembers = ["*"]\ncombine = "mean"\n')
    spec, run = RECORDS[record], READERS[record][command]
    file = _lock(ws) if record == "lock file" else ws / spec.path
    _damage(file, mutation, spec, root)
    image = next((ws / "data").glob("*/images/*.png"))
    argv = [part.format(root=root, image=image) for part in run.argv]
    before = snapshot(root)

    result = run_cli([*argv, "--workspace", ws], capsys)

    text = " ".join(result.err.split())  # rich wraps warnings
    assert "Traceback" not in result.out + result.err
    if run.outcome == "refused":
        assert_refused(result, str(file))
    elif run.outcome == "skipped":
        assert_refused(result)
        assert f"skipping {file}" in text, result.err
    elif run.outcome == "listed":
        assert result.code == 0, result.err
        assert "error:" not in result.err and str(file) in text, result.err
    else:  # recomputed: the cache entry is whole again
        assert result.code == 0, result.err
        cached = read_predictions(file.with_suffix(".csv"))  # the sidecar describes its CSV
        member = json.loads((ws / "members" / MEMBER / "member.json").read_text())
        assert sorted(cached.index) == sorted(member["split"]["ids"]["test"])
        assert CacheRecord.load(file).n_images == len(cached)
    after = snapshot(root)
    assert _without(after, run.changes) == _without(before, run.changes)
    assert [p for p in half_written(root) if Path(p) != file] == []
    assert not [str(p) for p in root.rglob(f"*{ESCAPED}*")]
    assert (outside / "notes.txt").read_text() == "the user's own file\n"
