"""Temperature scaling, calibration metrics, validation-chosen operating points, OOD scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from scoringkit import least_nll_temperature

from zoo.errors import ZooError
from zoo.inference.ood import (
    FeatureDensity,
    energy,
    fpr_at_recall,
    in_distribution_threshold,
    ood_scores,
    separation,
)
from zoo.scoring.calibration import (
    TemperatureScaling,
    as_logits,
    calibration_metrics,
    reliability_table,
)
from zoo.scoring.metrics import bootstrap_statistics
from zoo.scoring.operating_points import (
    ThresholdSelector,
    guaranteed_threshold,
    operating_point_block,
    parse_operating_point,
)


def synthetic(temperature: float, *, n: int = 20000, k: int = 5, seed: int = 0):
    """Labels drawn from softmax(z); the model reports softmax(z * temperature)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, k))
    true_p = softmax(z, axis=1)
    y = (rng.random((n, 1)) > true_p.cumsum(axis=1)).sum(axis=1)
    return z * temperature, y


def nll_by_hand(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    return float(-np.log(softmax(logits / temperature, axis=1)[np.arange(len(y)), y]).mean())


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(temperature):
    logits, y = synthetic(temperature)
    scaler = TemperatureScaling().fit(logits, y)
    assert scaler.temperature_ == pytest.approx(temperature, rel=0.05)  # the population's
    # and exactly the sample's least-NLL temperature, found by brute force without zoo
    best = least_nll_temperature(logits, y)
    assert scaler.temperature_ == pytest.approx(best, rel=1e-4)
    assert scaler.nll_before_ == pytest.approx(nll_by_hand(logits, y, 1.0), rel=1e-12)
    assert scaler.nll_after_ == pytest.approx(nll_by_hand(logits, y, best), rel=1e-9)
    assert scaler.nll_after_ <= scaler.nll_before_ + 1e-12


def test_temperature_scaling_on_probabilities_keeps_argmax_and_frame():
    logits, y = synthetic(3.0, n=2000)
    probs = pd.DataFrame(softmax(logits, axis=1), columns=list("abcde"))
    scaler = TemperatureScaling().fit(as_logits(probs.to_numpy()), y)
    out = scaler.transform(probs)
    log_p = np.log(np.clip(probs.to_numpy(), 1e-12, None))  # clipped as documented
    best = least_nll_temperature(log_p, y)  # brute force, without zoo
    assert scaler.temperature_ == pytest.approx(best, rel=1e-4)
    by_hand = softmax(log_p / best, axis=1)
    np.testing.assert_allclose(out.to_numpy(), by_hand, rtol=1e-4, atol=1e-12)
    assert list(out.columns) == list("abcde") and out.index.equals(probs.index)
    assert (out.to_numpy().argmax(axis=1) == probs.to_numpy().argmax(axis=1)).all()
    assert np.allclose(out.sum(axis=1), 1.0)
    before = calibration_metrics(probs.to_numpy(), y)
    after = calibration_metrics(out.to_numpy(), y)
    assert after["ece"] < before["ece"] / 2 and after["nll"] < before["nll"]


def test_temperature_scaling_needs_fit_and_checks_input():
    with pytest.raises(ZooError, match="not fitted"):
        TemperatureScaling().transform(np.full((2, 2), 0.5))
    with pytest.raises(ZooError, match="logits must be"):
        TemperatureScaling().fit(np.zeros((0, 3)), [])


def test_ece_on_hand_made_cases():
    # perfectly calibrated: confidence 0.8 in one bin, 8 of 10 right
    probs = np.tile([0.8, 0.2], (10, 1))
    y = np.array([0] * 8 + [1] * 2)
    m = calibration_metrics(probs, y)
    assert m["ece"] == pytest.approx(0.0) and m["mce"] == pytest.approx(0.0)
    # always confident and always right: gap 0.1 everywhere
    probs = np.tile([0.9, 0.1], (4, 1))
    m = calibration_metrics(probs, np.zeros(4, dtype=int))
    assert m["ece"] == pytest.approx(0.1) and m["mce"] == pytest.approx(0.1)
    assert m["brier"] == pytest.approx(0.1**2 * 2)
    assert m["nll"] == pytest.approx(-np.log(0.9))
    # two bins: 2 images at 0.6 (both wrong), 2 at 0.95 (both right)
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.95, 0.05], [0.95, 0.05]])
    y = np.array([1, 1, 0, 0])
    m = calibration_metrics(probs, y)
    assert m["ece"] == pytest.approx(0.5 * 0.6 + 0.5 * 0.05)
    assert m["mce"] == pytest.approx(0.6)
    table = reliability_table(probs, y)
    assert len(table) == 15 and table["n"].sum() == 4
    assert table.loc[table["n"] > 0, "accuracy"].tolist() == [0.0, 1.0]


def test_bootstrap_statistics_interval_contains_the_mean():
    values = np.arange(100, dtype=float)
    index = pd.Index([f"i{i}" for i in range(100)])
    ci = bootstrap_statistics(
        index, lambda c: {"mean": c @ values / c.sum(axis=1)}, n_resamples=200, seed=1
    )
    assert ci["mean"][0] < values.mean() < ci["mean"][1]


def frames(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    score = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    index = pd.Index([f"s{seed}_{i}" for i in range(n)], name="image")
    truth = pd.DataFrame({"mel": y * 1.0, "nv": 1.0 - y}, index=index)
    probs = pd.DataFrame({"mel": score, "nv": 1 - score}, index=index)
    return truth, probs


def test_threshold_selector_reaches_the_target_on_its_data():
    truth, probs = frames(0)
    y, s = truth["mel"].to_numpy() > 0.5, probs["mel"].to_numpy()
    sel = ThresholdSelector(metric="sensitivity", value=0.9).fit(y, s)
    assert sel.sensitivity_ >= 0.9 and (sel.predict(s)[y]).mean() == sel.sensitivity_
    sel = ThresholdSelector(metric="specificity", value=0.95).fit(y, s)
    assert sel.specificity_ >= 0.95 and (~sel.predict(s)[~y]).mean() == sel.specificity_


def test_operating_point_is_chosen_on_validation_only():
    spec = parse_operating_point("mel:sensitivity=0.90", ["mel", "nv"])
    val_truth, val_probs = frames(0)
    blocks = []
    for seed in (1, 2):
        truth, probs = frames(seed)
        blocks.append(
            operating_point_block(
                spec,
                val_truth=val_truth,
                val_probs=val_probs,
                truth=truth,
                probs=probs,
                groups=None,
                n_resamples=50,
                seed=0,
            )
        )
    assert blocks[0]["threshold"] == blocks[1]["threshold"]
    assert blocks[0]["sensitivity"] != blocks[1]["sensitivity"]
    low, high = blocks[0]["sensitivity_ci95"]
    assert low <= blocks[0]["sensitivity"] <= high


def test_at_least_point_parses_and_prints_back():
    spec = parse_operating_point("mel:sensitivity>=0.90", ["mel", "nv"])
    assert spec.at_least and spec.metric == "sensitivity" and spec.value == 0.9
    assert parse_operating_point(spec.text) == spec and spec.text == "mel:sensitivity>=0.9"
    assert not parse_operating_point("mel:specificity=0.8").at_least


def _scores(rng, n_pos: int, n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    return y, np.r_[rng.normal(1.0, 1.0, n_pos), rng.normal(-1.0, 1.0, n_neg)]


@pytest.mark.slow  # 6,000 bootstrap threshold choices
def test_at_least_point_keeps_its_sensitivity_on_new_images_where_the_plain_one_halves():
    """Chosen on 60 melanomas, applied to 20,000 new ones from the same distribution: the
    plain 90 % point reaches 90 % about half the time, the at-least point nearly always."""
    rng = np.random.default_rng(0)
    y_new, s_new = _scores(rng, 20_000, 10)
    s_new = s_new[y_new]
    plain, guaranteed = [], []
    for _ in range(30):
        y, s = _scores(rng, 60, 300)
        plain.append((s_new >= ThresholdSelector(value=0.9).fit(y, s).threshold_).mean())
        t = guaranteed_threshold(y, s, metric="sensitivity", value=0.9, n_resamples=200)
        guaranteed.append((s_new >= t).mean())
    assert 0.2 <= np.mean(np.array(plain) >= 0.9) <= 0.8
    assert np.mean(np.array(guaranteed) >= 0.9) >= 0.85


def test_ensembles_store_only_points_reached_on_validation():
    from zoo.scoring.operating_points import choose_operating_point

    with pytest.raises(ZooError, match="the at-least form is for zoo evaluate"):
        choose_operating_point(
            "mel:sensitivity>=0.9", classes=["mel", "nv"], labels=[0, 1], probabilities=[[1, 0]]
        )


def test_at_least_point_resamples_lesions_not_images():
    """Images of one lesion move together: with every lesion photographed four times the same
    data are four times less, so the at-least threshold must be lower (more sensitive)."""
    rng = np.random.default_rng(1)
    y, s = _scores(rng, 40, 200)
    y4, s4 = np.repeat(y, 4), np.repeat(s, 4)
    lesions = pd.Series(np.repeat(np.arange(len(y)), 4))
    kw = dict(metric="sensitivity", value=0.9, n_resamples=300)
    by_image = guaranteed_threshold(y4, s4, **kw)
    by_lesion = guaranteed_threshold(y4, s4, groups=lesions, **kw)
    assert by_lesion < by_image
    spec_point = guaranteed_threshold(y, s, metric="specificity", value=0.9, n_resamples=300)
    assert spec_point >= ThresholdSelector(metric="specificity", value=0.9).fit(y, s).threshold_


@pytest.mark.parametrize(
    "text, message",
    [
        ("mel", "expected CLASS:sensitivity"),
        ("mel:recall=0.9", "unknown metric 'recall'"),
        ("mel:sensitivity=high", "'high' is not a number"),
        ("mel:sensitivity=1.5", "must be in \\(0, 1\\]"),
        ("melanoma:sensitivity=0.9", "'melanoma' is not a class"),
    ],
)
def test_operating_point_errors_name_the_option_and_value(text, message):
    with pytest.raises(ZooError, match=message) as info:
        parse_operating_point(text, ["mel", "nv"])
    assert f"--operating-point {text!r}" in str(info.value)


def test_ood_scores_and_separation():
    confident = np.array([[0.98, 0.01, 0.01], [0.9, 0.05, 0.05]])
    flat = np.array([[0.34, 0.33, 0.33], [0.4, 0.3, 0.3]])
    s_in, s_out = ood_scores(confident), ood_scores(flat)
    assert (s_in["msp"] > s_out["msp"].max()).all()
    assert (s_in["energy"] > s_out["energy"].max()).all()
    assert separation(s_in["energy"], s_out["energy"]) == {"auroc": 1.0, "fpr_at_95_recall": 0.0}
    # energy at T = 1 of real logits; log p only fixes them up to a constant
    assert energy(np.log([[0.5, 0.5]]))[0] == pytest.approx(0.0)
    assert fpr_at_recall(np.arange(100), np.arange(100)) == pytest.approx(0.96)


def test_predict_can_carry_ood_scores(workspace, tmp_path, write_images, capsys):
    from zoo.cli.main import main

    write_images(tmp_path / "imgs", ["a", "b"], size=40)
    out = tmp_path / "p.csv"
    args = ["predict", "small_cnn.demo.s0", str(tmp_path / "imgs"), "--ood-scores"]
    assert main([*args, "--workspace", str(workspace), "--out", str(out), "--quiet"]) == 0
    frame = pd.read_csv(out).set_index("image")
    ood_columns = ["ood_msp", "ood_energy", "ood_mahalanobis", "ood_flag"]
    assert list(frame.columns[-4:]) == ood_columns
    assert set(frame["ood_flag"]) <= {0, 1}
    probs = frame.drop(columns=[*ood_columns, "mel_flag"], errors="ignore").to_numpy()
    np.testing.assert_allclose(frame["ood_msp"], probs.max(axis=1))
    expected = 0.5 * np.log((probs**2).sum(axis=1))  # from the CSV's rounded probabilities
    np.testing.assert_allclose(frame["ood_energy"], expected, rtol=1e-5, atol=1e-9)


def test_feature_density_is_the_shared_covariance_mahalanobis_distance():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 200)
    centres = {"a": 0.0, "b": 3.0, "c": -3.0}
    features = rng.normal(size=(600, 20)) + np.array([centres[k] for k in labels])[:, None]
    density = FeatureDensity().fit(features, labels)
    assert list(density.classes_) == ["a", "b", "c"]
    np.testing.assert_allclose(density.means_[1], features[labels == "b"].mean(axis=0))
    probe = rng.normal(size=(5, 20))
    by_hand = [
        min((x - m) @ density.precision_ @ (x - m) for m in density.means_) / 20 for x in probe
    ]
    np.testing.assert_allclose(density.score_samples(probe), -np.array(by_hand), rtol=1e-10)
    # held-out images of the same classes against images from elsewhere (another spread)
    inside = rng.normal(size=(200, 20)) + rng.choice([0.0, 3.0, -3.0], size=(200, 1))
    outside = rng.normal(scale=2.5, size=(50, 20))
    s_in, s_out = density.score_samples(inside), density.score_samples(outside)
    assert separation(s_in, s_out)["auroc"] > 0.99
    again = FeatureDensity.from_arrays(density.to_arrays())
    np.testing.assert_array_equal(again.score_samples(probe), density.score_samples(probe))


def test_feature_density_refuses_mismatched_input():
    with pytest.raises(ValueError, match=r"got \(3, 4\) and \(2,\)"):
        FeatureDensity().fit(np.zeros((3, 4)), ["a", "b"])


def test_in_distribution_threshold_keeps_the_recall():
    scores = np.arange(100.0)
    threshold = in_distribution_threshold(scores, recall=0.95)
    assert threshold == 4.0 and np.mean(scores >= threshold) >= 0.95  # the lower 5 % quantile


def test_member_density_is_fitted_once_and_cached_by_model(workspace, capsys):
    import shutil

    from zoo.inference.ood_features import cache_file, target_density
    from zoo.inference.target import MemberTarget

    shutil.rmtree(workspace / "cache" / "ood", ignore_errors=True)  # fitted by earlier tests
    target = MemberTarget.from_path(workspace / "members" / "small_cnn.demo.s0")
    density = target_density(target, workspace=workspace)
    assert not isinstance(density, str), density
    file = cache_file(target.member, workspace)
    assert file.is_file() and file.parent == workspace / "cache" / "ood"
    stamp = file.stat().st_mtime_ns
    fitted = density.parts[0][0]
    assert len(fitted.val_ids) == len(target.split_ids("val"))
    assert density.threshold == in_distribution_threshold(fitted.val_scores)
    again = target_density(target, workspace=workspace)
    assert file.stat().st_mtime_ns == stamp  # read, not refitted
    np.testing.assert_array_equal(again.parts[0][0].density.means_, fitted.density.means_)


def test_member_density_without_training_data_is_a_note(workspace):
    import json
    import shutil

    from zoo.inference.ood_features import target_density
    from zoo.inference.target import MemberTarget

    shutil.rmtree(workspace / "cache" / "ood", ignore_errors=True)  # fitted by earlier tests
    member_json = workspace / "members" / "small_cnn.demo.s0" / "member.json"
    info = json.loads(member_json.read_text())
    info["data"]["source"] = f"folder:{workspace / 'nowhere'}"
    member_json.write_text(json.dumps(info))
    note = target_density(MemberTarget.from_path(member_json.parent), workspace=workspace)
    assert isinstance(note, str) and "cannot be read" in note and "nowhere" in note
