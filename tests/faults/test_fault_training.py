"""Training under faults, in this process: Ctrl-C before and after the first checkpoint,
--resume with contradicting options, a loss that turns NaN, a lock held by another run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from faultkit import assert_refused, half_written, run_cli, tiny_folder

from zoo import console
from zoo.errors import ZooError
from zoo.store import locks
from zoo.training import trainer

NAME = "faulty"
TRAIN = [
    "train",
    "small_cnn",
    "--image-size",
    "32",
    "--name",
    NAME,
    "--quiet",
    "--jit-compile",
    "off",
]


@pytest.fixture(autouse=True)
def _console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(console, "_quiet", False)


@pytest.fixture
def data(tmp_path) -> str:
    return tiny_folder(tmp_path / "tiny")


def _interrupt(monkeypatch, *, after_checkpoint: bool) -> None:
    """Ctrl-C at the end of epoch 1: before its checkpoint is written, or just after."""
    original = trainer._save_checkpoint

    def save(run, model, row, is_best, epoch):
        if after_checkpoint:
            original(run, model, row, is_best, epoch)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_save_checkpoint", save)


@pytest.mark.slow
@pytest.mark.parametrize("again", [[], ["--resume"]], ids=["plain", "resume"])
def test_ctrl_c_before_the_first_checkpoint_then_running_again_starts_over(
    again, zoo_workspace, data, monkeypatch, capsys
):
    argv = [*TRAIN, "--epochs", "1", "--data", data, "--workspace", zoo_workspace]
    _interrupt(monkeypatch, after_checkpoint=False)
    result = run_cli(argv, capsys)
    assert result.code == 130 and "Traceback" not in result.err
    run_dir = zoo_workspace / "runs" / NAME
    assert run_dir.is_dir() and not (run_dir / "state.json").exists()
    assert not (zoo_workspace / "members" / f".{NAME}.lock").exists()
    monkeypatch.undo()
    loud = [a for a in argv if a != "--quiet"]  # --quiet silences warnings too
    result = run_cli([*loud, *again], capsys)
    assert result.code == 0, result.err
    assert "starting over" in " ".join(result.err.split())  # a warning, on stderr
    assert (zoo_workspace / "members" / NAME / "model.keras").is_file()
    assert not run_dir.exists() and half_written(zoo_workspace) == []


@pytest.mark.slow
def test_resume_refuses_contradicting_options_then_continues(
    zoo_workspace, data, monkeypatch, capsys
):
    argv = [*TRAIN, "--epochs", "2", "--data", data, "--workspace", zoo_workspace]
    _interrupt(monkeypatch, after_checkpoint=True)
    assert run_cli(argv, capsys).code == 130
    monkeypatch.undo()
    state = zoo_workspace / "runs" / NAME / "state.json"
    before = state.read_bytes()
    bad = [*TRAIN, "--image-size", "48", "--epochs", "3", "--data", data]
    bad += ["--workspace", zoo_workspace]
    assert_refused(run_cli([*bad, "--resume"], capsys), "--image-size 48", "--epochs 3")
    assert state.read_bytes() == before  # the interrupted run is untouched
    result = run_cli([*argv, "--resume"], capsys)
    assert result.code == 0, result.err
    info = json.loads((zoo_workspace / "members" / NAME / "member.json").read_text())
    assert info["training"]["epochs_run"] == 2
    assert info["config"]["options"]["image_size"] == 32 and info["input"]["size"] == 32


@pytest.mark.slow
def test_a_loss_that_turns_nan_stops_the_run_keeping_the_last_good_checkpoint(
    zoo_workspace, data, capsys
):
    """Stage 1 learns; stage 2's absurd learning rate overflows the weights in its epoch."""
    (zoo_workspace / "recipes").mkdir()
    (zoo_workspace / "recipes" / "wild.toml").write_text(
        'source = "test"\nbackbone = "small_cnn"\nweights = "none"\n'
        '[optimizer]\nname = "sgd"\n[input]\nsize = 32\n'
        '[[stages]]\nname = "calm"\ntrainable = "all"\nepochs = 1\nlearning_rate = 0.01\n'
        '[[stages]]\nname = "wild"\ntrainable = "all"\nepochs = 1\nlearning_rate = 1e30\n'
    )
    argv = ["train", "wild", "--name", NAME, "--data", data, "--jit-compile", "off"]
    argv += ["--workspace", zoo_workspace]
    result = run_cli([*argv, "--image-size", "32", "--epochs", "2", "--quiet"], capsys)
    assert_refused(result, "diverged", "epoch 2", "last good checkpoint (epoch 1)")
    state = json.loads((zoo_workspace / "runs" / NAME / "state.json").read_text())
    assert state["epochs_done"] == 1 and len(state["history"]) == 1
    assert not (zoo_workspace / "members" / NAME).exists()
    assert half_written(zoo_workspace) == []


def test_a_run_in_progress_is_refused_and_a_stale_lock_is_taken_over(zoo_workspace, capsys):
    """The lock names its owner; one whose process is gone no longer blocks."""
    folder = zoo_workspace / "members" / NAME
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = locks.lock_file(folder)
        lock.parent.mkdir(parents=True)
        record = {"pid": owner.pid, "host": socket.gethostname(), "what": "zoo train"}
        lock.write_text(json.dumps(record))
        result = run_cli([*TRAIN, "--epochs", "1", "--workspace", zoo_workspace], capsys)
        assert_refused(result, str(folder), f"pid {owner.pid}", str(lock))
        assert lock.is_file()
    finally:
        owner.kill()
        owner.wait()
    with locks.hold(folder, what="test") as held:  # the owner is gone: the lock is stale
        assert json.loads(held.read_text())["pid"] == os.getpid()
        with pytest.raises(ZooError, match="in use by another zoo command"):
            locks.acquire(folder, what="second")
    assert not lock.exists()
