"""tf.distribute: mirrored over two logical CPU devices, multi-worker over loopback.

Each run is a separate process (TensorFlow fixes its devices at start-up), bounded in time
and cleaned up afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
TRAIN = ["-m", "zoo", "train", "small_cnn", "--image-size", "32", "--epochs", "1", "--quiet"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_mirrored_over_two_logical_cpus(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            *TRAIN,
            "--strategy",
            "mirrored",
            "--batch-size",
            "32",
            "--workspace",
            str(tmp_path),
        ],
        env=_env(ZOO_LOGICAL_CPUS="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    member = tmp_path / "members" / "small_cnn.demo.s0"
    info = json.loads((member / "member.json").read_text())
    assert info["training"]["replicas"] == 2
    assert info["config"]["options"]["strategy"] == "mirrored"
    # the validation scores are those of the predictions written beside
    from sklearn.metrics import balanced_accuracy_score

    from zoo.data import load_dataset
    from zoo.store import read_predictions

    val = read_predictions(member / "predictions" / "val.csv")
    assert list(val.index) == info["split"]["ids"]["val"]
    labels = load_dataset("demo", workspace=tmp_path).records.loc[val.index, "label"]
    predicted = np.asarray(info["classes"])[val.to_numpy().argmax(axis=1)]
    assert info["metrics"]["val"]["n_images"] == len(val) > 0
    assert info["metrics"]["val"]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(labels, predicted), abs=1e-12
    )


def test_multi_worker_over_loopback(tmp_path: Path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for index in range(2):
            config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        *TRAIN,
                        "--strategy",
                        "multi-worker",
                        "--workspace",
                        str(tmp_path / f"w{index}"),
                    ],
                    env=_env(TF_CONFIG=config),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[:3000]
    chief = tmp_path / "w0" / "members" / "small_cnn.demo.s0" / "member.json"
    assert chief.exists()
    assert json.loads(chief.read_text())["training"]["replicas"] == 2
    assert not (tmp_path / "w1" / "members" / "small_cnn.demo.s0").exists()  # only the chief saves
