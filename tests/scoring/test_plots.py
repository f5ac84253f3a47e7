"""zoo.scoring.plots: every figure is a real PNG, written atomically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from zoo.errors import ZooError
from zoo.scoring.metrics import operating_points, sens_spec_curves
from zoo.scoring.plots import plot_bars_with_ci, plot_confusion, plot_roc, plot_sens_spec

CLASSES = ["MEL", "NV", "BCC"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


@pytest.fixture(scope="module")
def example():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 150)
    truth = pd.DataFrame(np.eye(3)[labels], columns=CLASSES, index=[f"i{i}" for i in range(150)])
    p = rng.dirichlet(np.ones(3), 150) + 0.5 * truth.to_numpy()
    predictions = pd.DataFrame(p / p.sum(axis=1, keepdims=True), index=truth.index, columns=CLASSES)
    return truth, predictions


def test_plot_roc(tmp_path, example):
    path = plot_roc(*example, tmp_path / "roc.png", title="ROC")
    assert path == tmp_path / "roc.png"
    assert_png(path)


def test_plot_sens_spec(tmp_path, example):
    curves = sens_spec_curves(*example)
    path = plot_sens_spec(
        curves, tmp_path / "ss.png", title="Melanoma", operating_points=operating_points(*example)
    )
    assert_png(path)
    with pytest.raises(ZooError, match="matching"):
        plot_sens_spec({"x": ([0, 1], [1], 0.5)}, tmp_path / "bad.png", title="t")


def test_plot_confusion(tmp_path, example):
    truth, predictions = example
    t = truth.idxmax(axis=1).tolist()
    p = predictions.idxmax(axis=1).tolist()
    p[0] = "undecided"
    assert_png(plot_confusion(t, p, CLASSES, tmp_path / "a" / "cm.png"))
    assert_png(plot_confusion(t, p, CLASSES, tmp_path / "b" / "cm.png", normalize=False))


def test_plot_bars_with_ci(tmp_path):
    path = plot_bars_with_ci(
        ["inception_v3.s0", "efficientnet_b4.s0", "ensemble"],
        [0.71, 0.78, 0.81],
        [(0.68, 0.74), (0.75, 0.81), None],
        tmp_path / "bars.png",
        xlabel="Balanced accuracy",
    )
    assert_png(path)
    with pytest.raises(ZooError, match="same length"):
        plot_bars_with_ci(["a"], [0.5, 0.6], [None], tmp_path / "x.png", xlabel="x")
