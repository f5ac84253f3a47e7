"""zoo.scoring.metrics against the official ISIC scorer (isic-challenge-scoring==5.6.0)."""

from __future__ import annotations

import json
import warnings

import isic_challenge_scoring as isic  # a test dependency: missing means failing, not skipping
import numpy as np
import pandas as pd
import pytest
from scoringkit import CLASSES, assert_same, make, official

from zoo.errors import ZooError
from zoo.scoring.metrics import (
    METRIC_NAMES,
    _resampled_rocs,
    bootstrap_ci,
    operating_points,
    roc_table,
    score,
    sens_spec_curves,
)


def weights_for(truth: pd.DataFrame, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(rng.choice([0.0, 0.5, 1.0, 2.5], len(truth)), index=truth.index)


CASES = {
    "random": {"seed": 0},
    "informative": {"seed": 1, "informative": 0.6},
    "ties": {"seed": 2, "informative": 0.3, "decimals": 1},
    "coarse ties": {"seed": 3, "decimals": 0},
}


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "score_weight"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_official_scorer(tmp_path, case, weighted):
    truth, predictions = make(250, **CASES[case])
    weights = weights_for(truth, 7) if weighted else None
    ours = score(truth, predictions[CLASSES[::-1]], weights=weights)  # aligned by name
    assert_same(official(tmp_path, truth, predictions, weights), ours)
    assert set(ours["per_category"]) == set(METRIC_NAMES)
    assert ours["absent_classes"] == []
    json.dumps(ours, allow_nan=False)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "score_weight"])
def test_perfect_predictor(tmp_path, weighted):
    truth, _ = make(120, seed=4)
    weights = weights_for(truth, 8) if weighted else None
    ours = score(truth, truth, weights=weights)
    assert_same(official(tmp_path, truth, truth, weights), ours)
    assert ours["aggregate"]["balanced_accuracy"] == 1.0
    assert ours["macro_average"]["auc"] == ours["macro_average"]["auc_sens_80"] == 1.0


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "score_weight"])
def test_constant_predictor(tmp_path, weighted):
    truth, _ = make(120, seed=5)
    constant = pd.DataFrame(1 / 7, index=truth.index, columns=truth.columns)
    weights = weights_for(truth, 9) if weighted else None
    ours = score(truth, constant, weights=weights)
    assert_same(official(tmp_path, truth, constant, weights), ours)
    assert ours["aggregate"]["balanced_accuracy"] == 0.0  # every row undecided
    assert ours["macro_average"]["auc"] == pytest.approx(0.5)
    assert ours["macro_average"]["auc_sens_80"] == pytest.approx(0.2 * 0.9)
    assert ours["macro_average"]["ppv"] == 1.0  # the scorer's freebie: nothing predicted


def test_threshold_is_strictly_greater_than_half(tmp_path):
    truth = pd.DataFrame(
        [[1, 0], [1, 0], [0, 1], [0, 1]], index=list("abcd"), columns=["MEL", "NV"], dtype=float
    )
    predictions = pd.DataFrame(
        [[0.5, 0.5], [0.7, 0.3], [0.2, 0.8], [0.5, 0.5]], index=list("abcd"), columns=truth.columns
    )
    ours = score(truth, predictions)
    assert_same(official(tmp_path, truth, predictions), ours)
    assert ours["per_category"]["sensitivity"]["MEL"] == 0.5  # 0.5 is not > 0.5


def test_official_zero_weight_image(tmp_path):
    truth, predictions = make(60, seed=6)
    ids = list(truth.index)
    ids[3] = "ISIC_0035068"
    truth.index = predictions.index = ids
    ours = score(truth, predictions)
    assert ours["zero_weight_images"] == ["ISIC_0035068"]
    assert_same(official(tmp_path, truth, predictions), ours)


def test_official_scorer_misaligns_weights_of_unsorted_truth(tmp_path):
    """Documents why truth.csv must be written sorted by image id."""
    truth, predictions = make(80, seed=16, informative=0.3)
    weights = weights_for(truth, 1)
    t = truth.assign(score_weight=weights).iloc[::-1]
    t.rename_axis("image").reset_index().to_csv(tmp_path / "truth.csv", index=False)
    predictions.rename_axis("image").reset_index().to_csv(tmp_path / "predictions.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unsorted = isic.ClassificationScore.from_file(
            tmp_path / "truth.csv",
            tmp_path / "predictions.csv",
            isic.ClassificationMetric.BALANCED_ACCURACY,
        ).to_dict(rocs=False)
    ours = score(truth, predictions, weights=weights)
    assert unsorted["macro_average"]["auc"] != pytest.approx(ours["macro_average"]["auc"])
    assert_same(official(tmp_path, truth, predictions, weights), ours)


def test_absent_class_is_none_and_left_out_of_macro():
    truth, predictions = make(200, seed=10, informative=0.4, classes=["MEL", "NV", "BCC"])
    truth["BCC"] = 0.0
    truth.loc[truth.sum(axis=1) == 0, "NV"] = 1.0
    ours = score(truth, predictions)
    assert ours["absent_classes"] == ["BCC"]
    per = ours["per_category"]
    for metric in ("sensitivity", "auc", "auc_sens_80", "ap"):
        assert per[metric]["BCC"] is None
    assert per["specificity"]["BCC"] is not None
    assert per["accuracy"]["BCC"] is not None
    for metric in METRIC_NAMES:
        present = [per[metric][c] for c in ("MEL", "NV")]
        assert ours["macro_average"][metric] == pytest.approx(np.mean(present))
    json.dumps(ours, allow_nan=False)


def test_class_with_no_negatives():
    truth = pd.DataFrame({"MEL": [1.0, 1.0, 1.0], "NV": [0.0, 0.0, 0.0]}, index=list("abc"))
    predictions = pd.DataFrame({"MEL": [0.9, 0.4, 0.6], "NV": [0.1, 0.6, 0.4]}, index=list("abc"))
    ours = score(truth, predictions)
    assert ours["per_category"]["auc"]["MEL"] is None
    assert ours["per_category"]["specificity"]["MEL"] is None
    assert ours["per_category"]["sensitivity"]["MEL"] == pytest.approx(2 / 3)
    assert ours["aggregate"]["balanced_accuracy"] == pytest.approx(2 / 3)
    assert ours["absent_classes"] == ["NV"]


def test_bad_inputs_name_the_problem():
    truth, predictions = make(20, seed=11)
    with pytest.raises(ZooError, match="1 missing.*ISIC_0000000"):
        score(truth, predictions.iloc[1:])
    with pytest.raises(ZooError, match="extra"):
        score(truth.iloc[1:], predictions)
    with pytest.raises(ZooError, match=r"missing \['DF'\].*extra \['UNK'\]"):
        score(truth, predictions.rename(columns={"DF": "UNK"}))
    with pytest.raises(ZooError, match="one-hot"):
        score(truth * 0.5, predictions)
    with pytest.raises(ZooError, match=r"\[0, 1\]"):
        score(truth, predictions * 3)
    with pytest.raises(ZooError, match="weights"):
        score(truth, predictions, weights=pd.Series(-1.0, index=truth.index))


def test_bootstrap_is_seeded_and_contains_point_estimate(monkeypatch):
    import zoo.scoring.metrics

    truth, predictions = make(2000, seed=12, informative=0.5)
    rocs, batches = zoo.scoring.metrics._resampled_rocs, []

    def counted(counts, y, s):
        batches.append(len(counts))
        return rocs(counts, y, s)

    def per_resample(*args, **kwargs):
        raise AssertionError("the bootstrap scored a resample on its own")

    monkeypatch.setattr(zoo.scoring.metrics, "_resampled_rocs", counted)
    monkeypatch.setattr(zoo.scoring.metrics, "roc_auc_score", per_resample)
    ci = bootstrap_ci(truth, predictions, n_resamples=1000, seed=3)
    # what keeps it fast: every resample scored once per class, many resamples per array pass
    assert sum(batches) == 1000 * len(CLASSES) and len(batches) <= 10 * len(CLASSES), batches
    monkeypatch.undo()
    assert ci == bootstrap_ci(truth, predictions, n_resamples=1000, seed=3)
    assert ci != bootstrap_ci(truth, predictions, n_resamples=1000, seed=4)
    point = score(truth, predictions)
    lo, hi = ci["balanced_accuracy"]
    assert lo < point["aggregate"]["balanced_accuracy"] < hi
    lo, hi = ci["macro_auc"]
    assert lo < point["macro_average"]["auc"] < hi
    lo, hi = ci["macro_auc_sens_80"]
    assert lo < point["macro_average"]["auc_sens_80"] < hi
    for cls in CLASSES:
        lo, hi = ci["auc"][cls]
        assert lo < point["per_category"]["auc"][cls] < hi
    assert ci["unit"] == "image" and ci["n_resamples"] == 1000 and ci["level"] == 0.95
    json.dumps(ci, allow_nan=False)


def test_bootstrap_covers_every_auc_of_score():
    """Per-class and macro auc and auc_sens_80 all get intervals that hold the point estimate;
    binary scores (an Esteva task) share the resamples."""
    truth, predictions = make(400, seed=16, informative=0.5, classes=["MEL", "NV", "BCC"])
    point = score(truth, predictions)
    y = truth["MEL"].to_numpy()[:300]
    s = predictions["MEL"].to_numpy()[:300]
    binary = {"mel": pd.DataFrame({"truth": y, "score": s}, index=truth.index[:300])}
    ci = bootstrap_ci(truth, predictions, n_resamples=300, seed=1, binary=binary)
    for metric in ("auc", "auc_sens_80"):
        lo, hi = ci[f"macro_{metric}"]
        assert lo <= point["macro_average"][metric] <= hi
        assert set(ci[metric]) == {"MEL", "NV", "BCC"}
        for cls, (lo, hi) in ci[metric].items():
            assert lo <= point["per_category"][metric][cls] <= hi, (metric, cls)
    task = ci["binary"]["mel"]
    truth_mel = pd.DataFrame({"p": y, "n": 1 - y}, index=truth.index[:300])
    sub = score(truth_mel, pd.DataFrame({"p": s, "n": 1 - s}, index=truth_mel.index))
    assert task["auc"][0] <= sub["per_category"]["auc"]["p"] <= task["auc"][1]
    assert task["n_valid"] == 300
    # The binary scores do not change the other intervals (same resamples).
    plain = bootstrap_ci(truth, predictions, n_resamples=300, seed=1)
    assert "binary" not in plain
    assert {k: v for k, v in ci.items() if k != "binary"} == plain
    with pytest.raises(ZooError, match="lacks"):
        bad = {"x": pd.DataFrame({"truth": [1], "score": [0.5]}, index=["nope"])}
        bootstrap_ci(truth, predictions, n_resamples=10, binary=bad)


def test_bootstrap_groups_and_missing_classes():
    truth, predictions = make(60, seed=13, informative=0.5, classes=["MEL", "NV", "DF"])
    truth["DF"] = 0.0
    truth.iloc[0] = [0.0, 0.0, 1.0]  # a single DF image: many resamples lack it
    truth.loc[truth.sum(axis=1) == 0, "MEL"] = 1.0
    groups = pd.Series(np.arange(60) // 2, index=truth.index, dtype=object)
    groups.iloc[-4:] = None  # no lesion id: each image is its own group
    ci = bootstrap_ci(truth, predictions, groups=groups, n_resamples=200, seed=0)
    assert ci["unit"] == "lesion"
    assert 0 < ci["n_valid"]["DF"] < 200
    assert ci["n_valid"]["MEL"] == 200
    assert all(v is not None for v in ci["auc"].values())
    with pytest.raises(ZooError, match="groups lack"):
        bootstrap_ci(truth, predictions, groups=groups.iloc[1:])
    with pytest.raises(ZooError, match="n_resamples"):
        bootstrap_ci(truth, predictions, n_resamples=0)


@pytest.mark.parametrize("decimals", [None, 1])
def test_resampled_rocs_match_weighted_official_metrics(decimals):
    """The vectorised bootstrap AUCs equal score() with the resample counts as weights."""
    truth, predictions = make(80, seed=14, informative=0.3, decimals=decimals)
    rng = np.random.default_rng(0)
    counts = np.stack([np.bincount(rng.integers(0, 80, 80), minlength=80) for _ in range(5)])
    for cls in ("MEL", "DF"):
        y = truth[cls].to_numpy()
        auc, pauc = _resampled_rocs(counts.astype(float), y, predictions[cls].to_numpy())
        for row, a, pa in zip(counts, auc, pauc, strict=True):
            weighted = score(truth, predictions, weights=pd.Series(row, index=truth.index))
            assert a == pytest.approx(weighted["per_category"]["auc"][cls], abs=1e-12)
            assert pa == pytest.approx(weighted["per_category"]["auc_sens_80"][cls], abs=1e-12)


def test_roc_table_and_curves():
    truth, predictions = make(100, seed=15, informative=0.4, classes=["MEL", "NV", "BCC"])
    truth["BCC"] = 0.0
    truth.loc[truth.sum(axis=1) == 0, "NV"] = 1.0
    table = roc_table(truth, predictions)
    assert list(table.columns) == ["class", "fpr", "tpr", "threshold"]
    assert sorted(table["class"].unique()) == ["MEL", "NV"]
    last = table.groupby("class").tail(1)
    assert (last["fpr"] == 1).all() and (last["tpr"] == 1).all()
    curves = sens_spec_curves(truth, predictions)
    point = score(truth, predictions)["per_category"]["auc"]
    for cls, (sens, spec, auc) in curves.items():
        assert len(sens) == len(spec)
        assert auc == pytest.approx(point[cls])
    points = operating_points(truth, predictions)
    assert set(points) == {"MEL", "NV"}
    per = score(truth, predictions)["per_category"]
    assert points["MEL"] == pytest.approx((per["sensitivity"]["MEL"], per["specificity"]["MEL"]))


def test_argmax_rates_are_the_confusion_matrix_rows_and_columns():
    """Against scikit-learn's confusion matrix of the argmax, and a lesion bootstrap whose
    intervals hold the point value and shrink to it for a perfect classifier."""
    from sklearn.metrics import confusion_matrix

    from zoo.scoring.metrics import argmax_rates

    truth, predictions = make(400, seed=5, informative=0.6)
    matrix = confusion_matrix(
        truth.to_numpy().argmax(1), predictions.to_numpy().argmax(1), labels=range(len(CLASSES))
    )
    groups = pd.Series([f"L{i // 3}" for i in range(len(truth))], index=truth.index)
    rates = argmax_rates(truth, predictions, groups=groups, n_resamples=300, seed=1)
    for j, c in enumerate(CLASSES):
        positives, predicted = matrix[j].sum(), matrix[:, j].sum()
        negatives = matrix.sum() - positives
        assert rates["sensitivity"][c] == pytest.approx(matrix[j, j] / positives)
        assert rates["specificity"][c] == pytest.approx(1 - (predicted - matrix[j, j]) / negatives)
        for name in ("sensitivity", "specificity"):
            low, high = rates[f"{name}_ci95"][c]
            assert low <= rates[name][c] <= high and low < high
    perfect = argmax_rates(truth, truth * 0.9 + 0.1 / len(CLASSES), n_resamples=50)
    assert set(perfect["sensitivity"].values()) == {1.0}
    assert all(v == [1.0, 1.0] for v in perfect["specificity_ci95"].values())
    bare = argmax_rates(truth, predictions, n_resamples=0)
    assert bare["sensitivity"] == rates["sensitivity"]
    assert set(map(str, bare["sensitivity_ci95"].values())) == {"None"}
