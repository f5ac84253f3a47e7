"""Helpers of the metric tests shared across test folders: synthetic truth and predictions,
the official ISIC scorer's figures, and a comparison of nested metric dicts."""

from __future__ import annotations

import warnings

import isic_challenge_scoring as isic  # a test dependency: missing means failing, not skipping
import numpy as np
import pandas as pd

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]


def make(n: int, *, seed: int, informative: float = 0.0, classes=CLASSES, decimals=None):
    """One-hot truth and Dirichlet predictions, optionally nudged towards the truth."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    labels = rng.integers(0, k, n)
    truth = pd.DataFrame(np.eye(k)[labels], index=ids, columns=classes)
    p = rng.dirichlet(np.full(k, 0.5), n) + informative * truth.to_numpy()
    p /= p.sum(axis=1, keepdims=True)
    if decimals is not None:
        p = np.round(p, decimals)
    return truth, pd.DataFrame(p, index=ids, columns=classes)


def official(tmp_path, truth, predictions, weights=None) -> dict:
    # Rows sorted by id: the scorer sorts the class columns but applies score_weight by
    # position, so an unsorted truth file gets misaligned weights (see the next test).
    t = truth.copy()
    if weights is not None:
        t["score_weight"] = weights
    t = t.sort_index()
    t.rename_axis("image").reset_index().to_csv(tmp_path / "truth.csv", index=False)
    # Shuffled rows: the scorer must align by image id.
    p = predictions.sample(frac=1.0, random_state=0)
    p.rename_axis("image").reset_index().to_csv(tmp_path / "predictions.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the scorer uses deprecated pandas calls
        result = isic.ClassificationScore.from_file(
            tmp_path / "truth.csv",
            tmp_path / "predictions.csv",
            isic.ClassificationMetric.BALANCED_ACCURACY,
        )
    return result.to_dict(rocs=False)


def assert_same(expected: dict, got: dict, where: str = "") -> None:
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_same(value, got[key], f"{where}.{key}")
        else:
            assert got[key] is not None, f"{where}.{key} is None, official {value}"
            assert abs(got[key] - value) <= 1e-9, f"{where}.{key}: {got[key]} != {value}"


def least_nll_temperature(logits, labels, *, bounds=(0.05, 20.0)) -> float:
    """The temperature ``T`` in ``bounds`` of least mean NLL of ``softmax(logits / T)``, found
    without zoo's optimiser: the NLL is convex in ``beta = 1 / T`` (a log-sum-exp of lines in
    ``beta`` minus a line), so the best point of a grid over ``beta`` brackets the minimum and
    golden-section search narrows the bracket to about 1e-8 of ``beta``."""
    z = np.asarray(logits, dtype=float)
    y = np.asarray(labels, dtype=int)
    rows = np.arange(len(z))

    def nll(beta: float) -> float:
        s = beta * z
        top = s.max(axis=1)
        return float(np.mean(top + np.log(np.exp(s - top[:, None]).sum(axis=1)) - s[rows, y]))

    grid = np.geomspace(1 / bounds[1], 1 / bounds[0], 201)
    best = int(np.argmin([nll(b) for b in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    while high - low > 1e-10 * high:
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if nll(left) < nll(right):
            high = right
        else:
            low = left
    return float(2 / (low + high))
