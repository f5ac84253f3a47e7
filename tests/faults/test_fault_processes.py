"""Real processes and signals: two trainings of one name, ``kill -9`` mid-run then --resume,
parallel evaluations and ensemble builds. Nothing is lost or half-written."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from faultkit import MEMBER, half_written, tiny_folder, zoo_process

TRAIN = ["train", "small_cnn", "--image-size", "32", "--name", "killed", "--quiet"]
TRAIN += ["--jit-compile", "off"]


def _wait_for(path: Path, process, timeout: float = 240) -> None:
    """Poll until ``path`` exists; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow
def test_two_trainings_of_one_name_then_kill_9_then_resume(zoo_workspace, tmp_path):
    """Both start together: the one that takes the lock trains, the other is refused."""
    data = tiny_folder(tmp_path / "tiny")
    argv = [*TRAIN, "--epochs", "8", "--data", data, "--workspace", zoo_workspace]
    pair = [zoo_process(*argv), zoo_process(*argv)]
    run_dir = zoo_workspace / "runs" / "killed"
    while all(p.poll() is None for p in pair):
        time.sleep(0.2)
    (second,) = [p for p in pair if p.poll() is not None]
    (first,) = [p for p in pair if p is not second]
    _, err = second.communicate()
    assert second.returncode == 2
    assert f"pid {first.pid}" in _one_error_line(err)

    _wait_for(run_dir / "state.json", first)  # epoch 1 is checkpointed
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (zoo_workspace / "members" / "killed").exists()

    again = zoo_process(*argv, "--resume")  # the dead owner's lock is stale
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    info = json.loads((zoo_workspace / "members" / "killed" / "member.json").read_text())
    assert info["training"]["epochs_run"] == 8
    assert not run_dir.exists() and half_written(zoo_workspace) == []


@pytest.mark.slow
def test_parallel_evaluations_and_ensemble_builds(workspace, tmp_path):
    """Two evaluations into one folder and two builds of one ensemble at the same time: each
    succeeds or is refused in one line; what remains is complete."""
    spec = tmp_path / "pair.toml"
    spec.write_text('members = ["*"]\ncombine = "mean"\n')
    evaluate = ["evaluate", MEMBER, "--bootstrap", "20", "--workspace", workspace, "--quiet"]
    build = ["ensemble", "build", spec, "--workspace", workspace, "--quiet"]
    processes = [zoo_process(*evaluate), zoo_process(*evaluate)]
    processes += [zoo_process(*build), zoo_process(*build)]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode in (0, 2), err
        if process.returncode == 2:
            assert "in use by another zoo command" in _one_error_line(err)
    assert [p.returncode for p in processes[:2]].count(0) >= 1
    assert [p.returncode for p in processes[2:]].count(0) >= 1
    (evaluation,) = (workspace / "evaluations").iterdir()
    member = json.loads((workspace / "members" / MEMBER / "member.json").read_text())
    truth = (evaluation / "truth.csv").read_text().splitlines()[1:]
    n_images = json.loads((evaluation / "metrics.json").read_text())["n_images"]
    assert n_images == len(truth) == len(member["split"]["ids"]["test"])
    assert json.loads((workspace / "ensembles" / "pair" / "ensemble.json").read_text())["members"]
    assert half_written(workspace) == []
