"""zoo evaluate: official-scorer equivalence, prior correction, TTA cache, label maps, tasks."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import isic_challenge_scoring as isic  # a test dependency: missing means failing, not skipping
import numpy as np
import pandas as pd
import pytest
from scoringkit import assert_same, least_nll_temperature
from sklearn.metrics import log_loss, roc_auc_score

from zoo.cli.main import main
from zoo.data import Dataset, load_dataset
from zoo.ensembles.targets import resolve_target
from zoo.errors import ZooError
from zoo.evaluation.evaluate import apply_label_map, evaluate_target
from zoo.inference import target as inference
from zoo.inference.members import Member
from zoo.scoring.priors import PriorCorrection
from zoo.store import read_predictions

NAME = "small_cnn.demo.s0"
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FILES = ("truth.csv", "predictions.csv", "metrics.json", "roc.csv", "roc.png")
FILES += ("sens_spec.csv", "sens_spec.png", "confusion.png", "reliability.csv", "reliability.png")


@pytest.fixture
def demo(workspace) -> Dataset:
    return load_dataset("demo", workspace=workspace)


def forbid_model(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model was used although the cache should have answered")

    monkeypatch.setattr(inference, "run_model", fail)
    monkeypatch.setattr(Member, "load_model", fail)
    inference.clear_model_cache()


def read_frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image": str}).set_index("image")


def temperature_scaled(probabilities: pd.DataFrame, temperature: float) -> pd.DataFrame:
    """``softmax(log p / T)`` by hand (``p`` clipped at 1e-12 before the log, as documented)."""
    z = np.log(np.clip(probabilities.to_numpy(dtype=float), 1e-12, None)) / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return pd.DataFrame(
        e / e.sum(axis=1, keepdims=True), index=probabilities.index, columns=probabilities.columns
    )


def calibrated(expected: pd.DataFrame, out: Path, correction, data: Dataset) -> pd.DataFrame:
    """``expected`` after the temperature scaling recorded in ``out/metrics.json``, whose
    temperature is checked against an independent fit: the least-NLL temperature on the
    member's ``predictions/val.csv`` after ``correction`` (the prior correction the caller
    applied to ``expected``), with the labels of ``data``. Where the target's stored choice
    (``calibration.json``, chosen by cross-validation when the member was trained) is no
    calibration and the evaluation applied it, ``expected`` is returned as it is."""
    metrics = json.loads((out / "metrics.json").read_text())
    calibration = metrics["calibration"]
    if not calibration["applied"] and metrics["served_calibration"].get("method") == "none":
        assert calibration["temperature"] is None and calibration["after"] is None
        return expected
    assert calibration["applied"] is True and calibration["fitted_on"] == "val"
    member = Path(metrics["target"]["path"])
    val = correction.transform(read_predictions(member / "predictions" / "val.csv").sort_index())
    labels = data.records.loc[val.index, "label"].map(list(val.columns).index).to_numpy()
    assert calibration["n_fit"] == len(val) == 42
    oracle = least_nll_temperature(np.log(np.clip(val.to_numpy(), 1e-12, None)), labels)
    assert calibration["temperature"] == pytest.approx(oracle, rel=1e-4)
    reported = temperature_scaled(expected, calibration["temperature"])
    np.testing.assert_allclose(reported, temperature_scaled(expected, oracle), rtol=1e-3, atol=1e-9)
    return reported


def official(folder: Path) -> dict:
    """The official ISIC scorer's figures for the truth and predictions in ``folder``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the scorer uses deprecated pandas calls
        result = isic.ClassificationScore.from_file(
            folder / "truth.csv",
            folder / "predictions.csv",
            isic.ClassificationMetric.BALANCED_ACCURACY,
        )
    return result.to_dict(rocs=False)


def copy_images(dataset: Dataset, labels: dict[str, str], folder: Path, per_class: int) -> None:
    """``folder/<new label>/<id>.jpg`` for ``per_class`` images of each demo ``label``."""
    for old, new in labels.items():
        (folder / new).mkdir(parents=True)
        rows = dataset.records[dataset.records["label"] == old].head(per_class)
        for image_id, path in rows["path"].items():
            shutil.copy(path, folder / new / f"{image_id}.jpg")


@pytest.fixture
def external(demo, tmp_path) -> Path:
    """A folder: data set with other label names (and one label the map will not cover)."""
    folder = tmp_path / "external"
    names = {"mel": "melanoma", "nv": "nevus", "bkl": "seborrheic keratosis", "akiec": "lentigo"}
    copy_images(demo, names, folder, per_class=6)
    return folder


LABEL_MAP = {"melanoma": "mel", "nevus": "nv", "seborrheic keratosis": "bkl"}


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- label maps (no model) ------------------------------------------------------------------


def small_dataset(labels, weights=None) -> Dataset:
    ids = [f"img{i}" for i in range(len(labels))]
    records = pd.DataFrame(
        {"path": "", "label": labels, "group": ids}, index=pd.Index(ids, name="image")
    )
    w = None if weights is None else pd.Series(weights, index=ids)
    return Dataset("tiny", "csv:tiny.csv", records, tuple(sorted(set(labels))), weights=w)


def test_label_map_translates_keeps_and_drops():
    data = small_dataset(["melanoma", "MEL", "nv", "other", "nevus"], weights=[1, 2, 3, 4, 5])
    with pytest.raises(ZooError, match=r"'other' \(1 images\).*--ignore-unmapped"):
        apply_label_map(data, {"melanoma": "mel", "nevus": "nv"}, CLASSES)
    mapped = apply_label_map(
        data, {"melanoma": "mel", "nevus": "nv"}, CLASSES, ignore_unmapped=True
    )
    assert mapped.classes == tuple(CLASSES)
    assert mapped.records["label"].tolist() == ["mel", "mel", "nv", "nv"]
    assert mapped.weights.tolist() == [1, 2, 3, 5]
    assert any("dropped 1 image" in n for n in mapped.notes)
    assert any("'MEL'" in n for n in mapped.notes)  # matched up to case, with a note
    assert list(mapped.truth().columns) == CLASSES


def test_label_map_target_must_be_a_class():
    with pytest.raises(ZooError, match="'melanoma_x'.*not classes of the model"):
        apply_label_map(small_dataset(["a"]), {"a": "melanoma_x"}, CLASSES)
    with pytest.raises(ZooError, match="JSON object of strings"):
        apply_label_map(small_dataset(["a"]), {"a": 3}, CLASSES)


# --- with the tiny member -------------------------------------------------------------------


@pytest.mark.slow
def test_metrics_match_the_official_scorer(workspace, demo):
    target = resolve_target(NAME, workspace)
    out = evaluate_target(target, demo, bootstrap=200, workspace=workspace)
    assert out == workspace / "evaluations" / f"{NAME}-demo-test"
    for name in FILES:
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".zoo-output.json"]
    truth, predictions = read_frame(out / "truth.csv"), read_frame(out / "predictions.csv")
    assert list(truth.columns) == list(predictions.columns) == CLASSES
    assert truth.index.is_monotonic_increasing and predictions.index.is_monotonic_increasing
    assert sorted(truth.index) == sorted(target.split_ids("test"))

    metrics = json.loads((out / "metrics.json").read_text())
    assert_same(official(out), metrics)
    assert metrics["n_images"] == 84 and metrics["classes"] == CLASSES
    assert metrics["split"] == "test" and metrics["tta"] == "none"
    assert metrics["prior_correction"] is True and metrics["label_map"] is None
    assert metrics["target"] == {"name": NAME, "kind": "member", "path": str(target.path)}
    assert metrics["data"]["fingerprint"] == demo.fingerprint and metrics["data"]["spec"] == "demo"
    assert metrics["zoo_version"] and metrics["inference"]["images"] == 84
    ci = metrics["ci95"]
    low, high = ci["balanced_accuracy"]
    assert low <= metrics["aggregate"]["balanced_accuracy"] <= high
    assert set(ci["auc"]) == set(CLASSES) and ci["n_resamples"] == 200 and ci["unit"] == "lesion"


@pytest.mark.slow
def test_score_weight_matches_the_official_scorer(workspace, demo, tmp_path):
    """isic: data with score_weight, evaluated as other data (split all)."""
    folder = tmp_path / "isic"
    (folder / "images").mkdir(parents=True)
    rows = demo.records.groupby("label").head(6)
    for image_id, path in rows["path"].items():
        shutil.copy(path, folder / "images" / f"{image_id}.jpg")
    onehot = pd.get_dummies(rows["label"]).reindex(columns=CLASSES, fill_value=False).astype(float)
    rng = np.random.default_rng(0)
    onehot["score_weight"] = rng.choice([0.5, 1.0, 2.0], len(onehot))
    onehot = onehot.sample(frac=1.0, random_state=1)  # unsorted on purpose
    onehot.rename_axis("image").to_csv(folder / "Test_GroundTruth.csv")
    data = load_dataset(f"isic:{folder / 'Test_GroundTruth.csv'}", workspace=workspace)

    out = evaluate_target(resolve_target(NAME, workspace), data, bootstrap=0, workspace=workspace)
    truth = read_frame(out / "truth.csv")
    assert list(truth.columns) == [*CLASSES, "score_weight"]
    assert truth.index.is_monotonic_increasing
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "all" and metrics["ci95"] is None
    assert_same(official(out), metrics)
    unweighted = official(out)  # sanity: the weights matter
    truth.drop(columns="score_weight").to_csv(out / "truth.csv")
    assert unweighted["overall"] != pytest.approx(official(out)["overall"])


def test_prior_correction_on_and_off(workspace, demo, monkeypatch):
    forbid_model(monkeypatch)  # the trainer's test.csv answers
    target = resolve_target(NAME, workspace)
    raw_out = evaluate_target(
        target, demo, prior_correction=False, bootstrap=0, workspace=workspace
    )
    fixed_out = evaluate_target(target, demo, bootstrap=0, workspace=workspace)
    assert raw_out.name == f"{NAME}-demo-test-raw" and fixed_out.name == f"{NAME}-demo-test"
    assert json.loads((raw_out / "metrics.json").read_text())["prior_correction"] is False
    assert json.loads((fixed_out / "metrics.json").read_text())["prior_correction"] is True

    cached = read_predictions(target.path / "predictions" / "test.csv").sort_index()
    raw = read_frame(raw_out / "predictions.csv")
    pd.testing.assert_frame_equal(raw, cached, check_names=False)
    priors = pd.Series(target.member.effective_priors, index=CLASSES)
    correction = PriorCorrection().fit(priors)
    expected = correction.transform(cached)
    got = read_frame(fixed_out / "predictions.csv")
    np.testing.assert_allclose(got, calibrated(expected, fixed_out, correction, demo), rtol=1e-12)
    calibration = json.loads((fixed_out / "metrics.json").read_text())["calibration"]
    method = json.loads((target.path / "calibration.json").read_text())["method"]
    assert calibration["stored"] is (method != "none")  # calibration.json, as zoo serves it
    assert not np.allclose(raw, expected, rtol=1e-6)


def test_failed_evaluation_keeps_the_previous_one(workspace, demo, monkeypatch):
    """The folder is swapped in whole: a crash mid-write leaves the old evaluation intact."""
    forbid_model(monkeypatch)
    target = resolve_target(NAME, workspace)
    out = evaluate_target(target, demo, bootstrap=0, workspace=workspace)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {*FILES, ".zoo-output.json"}  # and zoo's marker

    import zoo.scoring.plots

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(zoo.scoring.plots, "plot_confusion", crash)  # the last file written
    with pytest.raises(RuntimeError, match="disk full"):  # other predictions, same folder
        evaluate_target(
            target, demo, bootstrap=0, prior_correction=False, out=out, workspace=workspace
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporaries left


def test_out_that_is_no_evaluation_is_refused(workspace, demo, tmp_path, monkeypatch):
    forbid_model(monkeypatch)
    target = resolve_target(NAME, workspace)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ZooError, match=r"not an evaluation \(notes.txt\).*new or empty folder"):
        evaluate_target(target, demo, bootstrap=0, out=folder, workspace=workspace)
    assert (folder / "notes.txt").read_text() == "keep me"
    out = evaluate_target(
        target, demo, bootstrap=0, out=tmp_path / "new" / "eval", workspace=workspace
    )
    assert (out / "metrics.json").is_file()


def test_target_priors(workspace, demo, tmp_path, monkeypatch, capsys):
    forbid_model(monkeypatch)
    target = resolve_target(NAME, workspace)
    file = tmp_path / "clinic.json"
    file.write_text(json.dumps({c: (6.0 if c == "nv" else 1.0) for c in CLASSES}))
    out = evaluate_target(target, demo, bootstrap=0, target_priors=str(file), workspace=workspace)
    assert out.name == f"{NAME}-demo-test-priors-clinic"

    cached = read_predictions(target.path / "predictions" / "test.csv").sort_index()
    trained = pd.Series(target.member.effective_priors, index=CLASSES)
    wanted = pd.Series({c: (0.5 if c == "nv" else 1 / 12) for c in CLASSES})
    correction = PriorCorrection(target_priors=wanted).fit(trained)
    expected = correction.transform(cached)
    np.testing.assert_allclose(
        read_frame(out / "predictions.csv"), calibrated(expected, out, correction, demo), rtol=1e-9
    )

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["prior_correction"] is True and metrics["tta"] == "none"
    assert metrics["tta_scheme"] == {"spec": "none", "n_views": 1, "weights": [1.0]}
    priors = metrics["priors"]
    assert priors["correction"] is True and priors["target_priors_source"] == str(file)
    assert priors["target_priors"] == pytest.approx(wanted.to_dict())
    assert priors["training_priors"] == pytest.approx(trained.to_dict())
    assert any("summed to 12; normalised to 1" in n for n in metrics["notes"])
    assert metrics["calibration"]["stored"] is False  # the stored one is for uniform priors

    # uniform: the default correction, the default folder
    plain = evaluate_target(target, demo, bootstrap=0, target_priors="uniform", workspace=workspace)
    assert plain.name == f"{NAME}-demo-test"
    raw = evaluate_target(target, demo, bootstrap=0, prior_correction=False, workspace=workspace)
    record = json.loads((raw / "metrics.json").read_text())["priors"]
    assert record == {
        "correction": False,
        "training_priors": None,
        "target_priors": None,
        "target_priors_source": None,
    }

    argv = ["evaluate", NAME, "--workspace", workspace, "--bootstrap", 0]
    code, _, err = run(capsys, *argv, "--target-priors", file, "--no-prior-correction")
    assert code == 2 and err.count("\n") == 1 and "--no-prior-correction" in err
    file.write_text(json.dumps({"mel": 1.0, "nevus": 1.0}))
    code, _, err = run(capsys, *argv, "--target-priors", file)
    assert code == 2 and err.count("\n") == 1
    assert f"--target-priors {file}: unknown class 'nevus'" in err


def _auc_points(metrics: dict):
    """(where, point estimate, interval) of every AUC-type number in metrics.json."""
    ci = metrics["ci95"]
    for metric in ("auc", "auc_sens_80"):
        for cls, value in metrics["per_category"][metric].items():
            yield f"{metric}.{cls}", value, ci[metric][cls]
        yield f"macro_{metric}", metrics["macro_average"][metric], ci[f"macro_{metric}"]
    if metrics["task"]:
        yield "task_auc", metrics["task"]["auc"], ci["task_auc"]


@pytest.mark.parametrize("task", [None, "melanocytic"])
def test_every_auc_has_an_interval(workspace, demo, monkeypatch, task):
    forbid_model(monkeypatch)
    target = resolve_target(NAME, workspace)
    out = evaluate_target(target, demo, bootstrap=300, task=task, workspace=workspace)
    metrics = json.loads((out / "metrics.json").read_text())
    # every AUC-type key metrics.json reports is one the check below covers
    auc_keys = {k for k in metrics["macro_average"] if "auc" in k}
    assert auc_keys == {"auc", "auc_sens_80"}
    if task:
        assert {k for k in metrics["task"] if "auc" in k} == {"auc", "auc_ci95"}
        assert metrics["task"]["auc_ci95"] == metrics["ci95"]["task_auc"]
    points = list(_auc_points(metrics))
    assert len(points) == 2 * (len(CLASSES) + 1) + bool(task)
    for where, value, interval in points:
        if value is None:
            assert interval is None, where
        else:
            assert interval is not None, where
            assert interval[0] <= value <= interval[1], (where, value, interval)


@pytest.mark.slow
def test_second_evaluate_with_tta_uses_the_cache(workspace, demo, monkeypatch):
    target = resolve_target(NAME, workspace)
    first = evaluate_target(target, demo, tta="rotations:4", bootstrap=0, workspace=workspace)
    assert first.name == f"{NAME}-demo-test-rotations-4"
    assert (target.path / "predictions" / "test.rotations-4.csv").is_file()
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["tta"] == "rotations:4" and metrics["inference"]["cached"] is False
    before = (first / "predictions.csv").read_text()

    forbid_model(monkeypatch)
    again = evaluate_target(target, demo, tta="rotations:4", bootstrap=0, workspace=workspace)
    assert (again / "predictions.csv").read_text() == before
    again_metrics = json.loads((again / "metrics.json").read_text())
    assert again_metrics["inference"]["cached"] is True
    # the model time of a cached answer is the one its sidecar recorded when the model ran
    sidecar = json.loads((target.path / "predictions" / "test.rotations-4.json").read_text())
    assert sidecar["n_images"] == 84
    model_seconds = metrics["inference"]["model_seconds"]
    assert again_metrics["inference"]["model_seconds"] == model_seconds == sidecar["seconds"]


@pytest.mark.slow
def test_label_map_on_an_external_folder(workspace, external, tmp_path, capsys):
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(LABEL_MAP))
    data = f"folder:{external}"
    base = ["evaluate", NAME, "--workspace", workspace, "--data", data, "--bootstrap", 50]

    code, _, err = run(capsys, *base, "--label-map", map_file)
    assert code == 2 and err.count("\n") == 1 and "'lentigo' (6 images)" in err

    out = tmp_path / "ext-eval"
    code, stdout, err = run(
        capsys, *base, "--label-map", map_file, "--ignore-unmapped", "--out", out
    )
    assert code == 0, err
    assert "absent" in stdout and "dropped 6 image" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "all" and metrics["label_map"] == LABEL_MAP
    assert metrics["n_images"] == 18 and metrics["classes"] == CLASSES
    assert metrics["absent_classes"] == ["akiec", "bcc", "df", "vasc"]
    for metric in ("sensitivity", "auc", "ap"):
        assert metrics["per_category"][metric]["df"] is None
        assert metrics["per_category"][metric]["mel"] is not None
    present = [metrics["per_category"]["auc"][c] for c in ("bkl", "mel", "nv")]
    assert metrics["macro_average"]["auc"] == pytest.approx(np.mean(present))
    assert metrics["ci95"]["auc"]["df"] is None
    truth = read_frame(out / "truth.csv")
    assert list(truth.columns) == CLASSES and truth["mel"].sum() == 6
    assert truth.index.str.startswith("melanoma/").sum() == 6

    code, _, err = run(capsys, *base, "--label-map", map_file, "--split", "test")
    assert code == 2 and "--split all" in err


def test_map_target_that_is_no_class_exits_2(workspace, external, tmp_path, capsys):
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps({**LABEL_MAP, "lentigo": "lentigo maligna"}))
    argv = ["evaluate", NAME, "--workspace", workspace, "--data", f"folder:{external}"]
    code, _, err = run(capsys, *argv, "--label-map", map_file)
    assert code == 2 and "'lentigo maligna'" in err and err.count("\n") == 1


@pytest.mark.slow
def test_task_on_the_demo_member(workspace, capsys):
    argv = ["evaluate", NAME, "--workspace", workspace, "--task", "melanocytic"]
    code, stdout, err = run(capsys, *argv, "--bootstrap", 100)
    assert code == 0, err
    assert "Melanoma vs nevus" in stdout
    out = workspace / "evaluations" / f"{NAME}-demo-test-melanocytic"
    metrics = json.loads((out / "metrics.json").read_text())
    task = metrics["task"]
    assert task["task"] == "melanocytic" and task["threshold"] == 0.5
    assert task["n_positive"] == 12 and task["n_negative"] == 30  # mel and nv of the test split
    # the task's score, from the files beside metrics.json: melanoma's share of mel + nv
    truth, predictions = read_frame(out / "truth.csv"), read_frame(out / "predictions.csv")
    y = truth.loc[predictions.index, "mel"].to_numpy() > 0.5
    s = (predictions["mel"] / (predictions["mel"] + predictions["nv"])).to_numpy()
    assert task["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert task["sensitivity"] == pytest.approx((s[y] > 0.5).mean(), abs=1e-12)
    assert task["specificity"] == pytest.approx((s[~y] <= 0.5).mean(), abs=1e-12)
    assert task["auc"] >= 0.5  # and the member learned something in its one epoch
    low, high = task["auc_ci95"]
    assert low <= task["auc"] <= high and metrics["ci95"]["task_auc"] == task["auc_ci95"]
    assert task["sensitivity"] is not None and task["specificity"] is not None
    assert task["positive_classes"] == ["mel"] and task["negative_classes"] == ["nv"]
    curve = pd.read_csv(out / "sens_spec.csv")
    assert list(curve.columns) == ["threshold", "sensitivity", "specificity"]
    assert curve["sensitivity"].iloc[-1] == 1.0
    assert (out / "sens_spec.png").read_bytes()[:8] == PNG_MAGIC
    assert metrics["n_images"] == 42
    assert set(read_frame(out / "truth.csv").idxmax(axis=1)) == {"mel", "nv"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "no_such_member"], "no member or ensemble 'no_such_member'"),
        (["evaluate", NAME, "--tta", "sideways"], "unknown TTA scheme 'sideways'"),
        (["evaluate", NAME, "--tta", "rotations:0"], "rotations:N"),
        (["evaluate", NAME, "--task", "melanoma"], "unknown --task 'melanoma'"),
        (["evaluate", NAME, "--bootstrap", "-1"], "--bootstrap"),
        (["evaluate", NAME, "--label-map", "missing.json"], "--label-map missing.json"),
        (["predict", "no_such_member", "x.jpg"], "no member or ensemble"),
        (["predict", NAME, "x.jpg", "--tta", "sideways"], "unknown TTA scheme"),
    ],
    ids=["target", "tta", "rotations", "task", "bootstrap", "label-map", "predict", "predict-tta"],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, *argv, "--workspace", tmp_path)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err


def test_changed_training_data_needs_explicit_data(workspace, tmp_path, capsys):
    member = workspace / "members" / NAME / "member.json"
    info = json.loads(member.read_text())
    info["data"]["fingerprint"] = "0" * 16
    member.write_text(json.dumps(info))
    code, _, err = run(capsys, "evaluate", NAME, "--workspace", workspace)
    assert code == 2 and "changed since training" in err


# --- calibration, operating points, out-of-distribution --------------------------------------


def point_threshold(metrics: dict, k: int) -> float:
    return metrics["operating_points"][k]["threshold"]


def calibration_by_hand(truth: pd.DataFrame, probs: pd.DataFrame) -> dict[str, float]:
    """ECE and MCE over the 15 equal-width bins ``(k/15, (k+1)/15]`` of the top-label
    confidence, the multi-class Brier score, and the NLL (scikit-learn's ``log_loss``)."""
    p = probs.loc[truth.index, truth.columns].to_numpy()
    y = truth.to_numpy().argmax(axis=1)
    confidence, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(float)
    bins = np.digitize(confidence, np.linspace(0, 1, 16), right=True) - 1
    used = [k for k in range(15) if (bins == k).any()]
    gaps = np.array([abs(correct[bins == k].mean() - confidence[bins == k].mean()) for k in used])
    shares = np.array([(bins == k).mean() for k in used])
    return {
        "ece": float(shares @ gaps),
        "mce": float(gaps.max()),
        "brier": float(((p - np.eye(p.shape[1])[y]) ** 2).sum(axis=1).mean()),
        "nll": float(log_loss(y, p / p.sum(axis=1, keepdims=True), labels=range(p.shape[1]))),
    }


def test_calibration_operating_points_and_ood(workspace, demo, tmp_path, capsys, write_images):
    """``--calibrate``: a temperature fitted on val and applied; melanoma points at 90/95 %
    sensitivity and at least 90 % (a threshold no higher than the 90 % point's)."""
    write_images(tmp_path / "ood" / "photo", [f"p{i}" for i in range(6)], size=40)
    out = tmp_path / "eval"
    code, stdout, _ = run(
        capsys,
        "evaluate", NAME, "--workspace", workspace, "--bootstrap", 50, "--out", out,
        "--operating-point", "nv:specificity=0.8", "--ood-data", f"folder:{tmp_path / 'ood'}",
        "--calibrate",
    )  # fmt: skip
    assert code == 0 and "calibration after" in stdout and "OOD msp" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert_same(official(out), metrics)
    cal = metrics["calibration"]
    assert cal["applied"] and cal["n_bins"] == 15 and cal["stored"] is False
    # the temperature: the least-NLL one on the prior-corrected validation predictions
    target = resolve_target(NAME, workspace)
    correction = PriorCorrection().fit(pd.Series(target.member.effective_priors, index=CLASSES))
    cached = read_predictions(target.path / "predictions" / "test.csv").sort_index()
    truth, before = read_frame(out / "truth.csv"), correction.transform(cached)
    after = read_frame(out / "predictions.csv")
    np.testing.assert_allclose(after, calibrated(before, out, correction, demo), rtol=1e-12)
    for when, probs in (("before", before), ("after", after)):
        by_hand = calibration_by_hand(truth, probs)
        for key in ("ece", "mce", "brier", "nll"):
            assert cal[when][key] == pytest.approx(by_hand[key], rel=1e-9, abs=1e-12), (when, key)
            assert len(cal[when]["ci95"][key]) == 2
    assert (out / "reliability.png").read_bytes()[:8] == PNG_MAGIC
    specs = [p["spec"] for p in metrics["operating_points"]]
    assert specs == [
        "nv:specificity=0.8",
        "mel:sensitivity=0.9",
        "mel:sensitivity=0.95",
        "mel:sensitivity>=0.9",
    ]
    guaranteed = metrics["operating_points"][3]
    assert guaranteed["at_least"] and guaranteed["threshold"] <= point_threshold(metrics, 1)
    point = metrics["operating_points"][1]
    assert point["chosen_on"] == "val" and point["val"]["sensitivity"] >= 0.9
    assert point["n_positive"] == metrics["class_counts"]["mel"]
    for p in metrics["operating_points"]:  # what each validation threshold does on the test
        positive = truth[p["class"]].to_numpy() > 0.5
        flagged = after[p["class"]].to_numpy() >= p["threshold"]
        assert p["sensitivity"] == pytest.approx(flagged[positive].mean()), p["spec"]
        assert p["specificity"] == pytest.approx((~flagged[~positive]).mean()), p["spec"]
    ood = metrics["ood"]
    assert ood["n_out"] == 6 and set(ood["scores"]) == {"msp", "energy", "mahalanobis"}
    scores = pd.read_csv(out / "ood.csv", dtype={"image": str})
    assert len(scores) == 84 + 6
    inside = scores["set"] == "in"
    assert inside.sum() == 84 and (scores.loc[~inside, "set"] == "ood").all()
    msp = scores[inside].set_index("image")["msp"]
    np.testing.assert_allclose(msp.loc[after.index], after.max(axis=1), rtol=1e-12)
    for name, separation in ood["scores"].items():  # in-distribution is the positive class
        auroc = roc_auc_score(inside, scores[name])
        assert separation["auroc"] == pytest.approx(auroc, abs=1e-12), name
    flag = ood["flag"]
    assert flag["score"] == "mahalanobis"
    below = scores["mahalanobis"] < flag["threshold"]
    assert flag["ood_flagged"] == pytest.approx(below[~inside].mean(), abs=1e-12)
    assert flag["in_flagged"] == pytest.approx(below[inside].mean(), abs=1e-12)
    assert "OOD flag (mahalanobis below" in stdout

    code, _, _ = run(
        capsys, "evaluate", NAME, "--workspace", workspace, "--bootstrap", 0, "--no-calibration"
    )
    plain = workspace / "evaluations" / f"{NAME}-demo-test-uncalibrated"
    assert (
        code == 0
        and json.loads((plain / "metrics.json").read_text())["calibration"]["applied"] is False
    )


def test_calibrate_fits_a_temperature_for_this_evaluation(
    workspace, demo, tmp_path, monkeypatch, capsys
):
    """Without ``--calibrate`` the stored temperature is applied, as zoo serves it; with it a
    temperature is fitted on validation for this evaluation alone, and the note says so."""
    forbid_model(monkeypatch)  # the trainer's val.csv and test.csv answer
    target = resolve_target(NAME, workspace)
    stored = target.path / "calibration.json"
    record = json.loads(stored.read_text())
    record["method"], record["parameters"] = "temperature", {"temperature": 3.0}
    stored.write_text(json.dumps(record))
    text = stored.read_text()
    correction = PriorCorrection().fit(pd.Series(target.member.effective_priors, index=CLASSES))
    cached = read_predictions(target.path / "predictions" / "test.csv").sort_index()
    expected = correction.transform(cached)
    base = ["evaluate", NAME, "--workspace", workspace, "--bootstrap", 0]

    code, _, err = run(capsys, *base, "--out", tmp_path / "served")
    assert code == 0, err
    served = json.loads((tmp_path / "served" / "metrics.json").read_text())
    assert served["calibration"]["stored"] is True and served["calibration"]["temperature"] == 3.0
    got = read_frame(tmp_path / "served" / "predictions.csv")
    np.testing.assert_allclose(got, temperature_scaled(expected, 3.0), rtol=1e-12)
    assert not any("fitted for this evaluation" in n for n in served["notes"])

    out = tmp_path / "fitted"
    code, stdout, err = run(capsys, *base, "--calibrate", "--out", out)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["stored"] is False and cal["method"] == "temperature"
    got = read_frame(out / "predictions.csv")
    np.testing.assert_allclose(got, calibrated(expected, out, correction, demo), rtol=1e-12)
    assert cal["temperature"] != pytest.approx(3.0, rel=0.1)  # not the stored one
    note = (
        "the temperature was fitted for this evaluation only; zoo predict serves the stored "
        f"calibration (zoo calibrate {NAME} stores one)"
    )
    assert note in metrics["notes"]
    assert metrics["served_calibration"]["parameters"] == {"temperature": 3.0}
    printed = " ".join(stdout.split())  # rich wraps long lines
    assert f"calibration after (T = {cal['temperature']:.3f}, fitted here)" in printed
    assert "fitted for this evaluation only" in printed
    assert stored.read_text() == text  # what zoo serves is left as it was


@pytest.mark.parametrize(
    "option, message",
    [
        ("mel:sens=0.9", "--operating-point 'mel:sens=0.9': unknown metric 'sens'"),
        ("foo:sensitivity=0.9", "'foo' is not a class"),
    ],
)
def test_operating_point_bad_input_is_a_one_line_error(workspace, capsys, option, message):
    code, _, err = run(
        capsys, "evaluate", NAME, "--workspace", workspace, "--operating-point", option
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
