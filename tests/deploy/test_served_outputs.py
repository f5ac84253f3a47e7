"""One truth from evaluation to every output: the probabilities and the melanoma flag that
``zoo evaluate`` scores are the ones ``zoo predict``, the Python API and ``zoo serve`` give."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_MEMBER

from zoo.cli.main import main
from zoo.data.demo import demo_folder
from zoo.scoring.calibrators import (
    Temperature,
    VectorScaling,
    calibrate,
    calibrator_from_dict,
    choose_calibrator,
)
from zoo.store.calibration import CALIBRATION_FILE, CalibrationRecord


def _frame(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image": str}).set_index("image")


def test_a_trained_member_stores_its_calibration_and_operating_point(workspace):
    record = CalibrationRecord.load(workspace / "members" / DEMO_MEMBER / CALIBRATION_FILE)
    info = json.loads((workspace / "members" / DEMO_MEMBER / "member.json").read_text())
    assert record.classes == info["classes"]
    assert record.settings == {"tta": "none", "prior_correction": True}
    assert record.method in ("none", "temperature", "vector")
    assert record.fit["images"] == len(info["split"]["ids"]["val"])


def test_predict_gives_what_evaluate_scored(workspace, tmp_path, capsys):
    """Default ``zoo predict`` on the test images equals default ``zoo evaluate``'s
    predictions.csv, and the API gives the same numbers."""
    import zoo

    out = tmp_path / "eval"
    assert main(["evaluate", DEMO_MEMBER, "--workspace", str(workspace), "--bootstrap", "0",
                 "--out", str(out)]) == 0  # fmt: skip
    scored = _frame(out / "predictions.csv")
    info = json.loads((workspace / "members" / DEMO_MEMBER / "member.json").read_text())
    images = demo_folder(workspace) / "images"
    files = [next(images.glob(f"{i}.*")) for i in info["split"]["ids"]["test"][:12]]
    csv = tmp_path / "p.csv"
    assert main(["predict", DEMO_MEMBER, *map(str, files), "--workspace", str(workspace),
                 "--out", str(csv)]) == 0  # fmt: skip
    capsys.readouterr()
    predicted = _frame(csv)
    classes = list(scored.columns)
    np.testing.assert_allclose(
        predicted[classes].to_numpy(), scored.loc[predicted.index, classes].to_numpy(), atol=1e-5
    )
    api = zoo.load(DEMO_MEMBER, workspace=workspace).predict(files)
    np.testing.assert_allclose(api[classes].to_numpy(), predicted[classes].to_numpy(), atol=1e-6)
    sidecar = json.loads(csv.with_name(csv.name + ".json").read_text())
    assert sidecar["calibration"]["applied"] in (True, False)
    point = CalibrationRecord.load(
        workspace / "members" / DEMO_MEMBER / CALIBRATION_FILE
    ).operating_point
    if point is not None:  # the flag column at the stored threshold
        flags = (predicted["mel"] >= point["threshold"]).astype(int)
        assert (predicted["mel_flag"] == flags).all()


def test_no_calibration_is_one_switch(workspace, tmp_path, capsys):
    """``--no-calibration`` gives the same numbers in ``zoo predict`` and the API."""
    import zoo

    info = json.loads((workspace / "members" / DEMO_MEMBER / "member.json").read_text())
    images = demo_folder(workspace) / "images"
    files = [next(images.glob(f"{i}.*")) for i in info["split"]["ids"]["test"][:5]]
    csv = tmp_path / "raw.csv"
    assert main(["predict", DEMO_MEMBER, *map(str, files), "--workspace", str(workspace),
                 "--out", str(csv), "--no-calibration"]) == 0  # fmt: skip
    capsys.readouterr()
    raw = _frame(csv)
    api = zoo.load(DEMO_MEMBER, workspace=workspace).predict(files, calibrated=False)
    classes = [c for c in raw.columns if not c.endswith("_flag")]
    np.testing.assert_allclose(api[classes].to_numpy(), raw[classes].to_numpy(), atol=1e-6)


def _distorted(n: int, seed: int):
    """Labels and probabilities made over-confident and biased per class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), y] += 2.0
    distorted = np.exp(3 * logits + np.array([0.0, 1.0, -1.0, 0.5]))
    return y, distorted / distorted.sum(axis=1, keepdims=True)


def _nll(p, y) -> float:
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def test_vector_scaling_undoes_a_class_bias_on_held_out_images():
    """Cross-validation prefers vector scaling to temperature scaling and to none when the
    distortion is biased per class, and the choice lowers the NLL of new images."""
    y, p = _distorted(900, seed=0)
    chosen, record = choose_calibrator(p, y, np.arange(len(y)) // 2)
    assert record["method"] == "vector" and isinstance(chosen, VectorScaling)
    assert record["cv_nll"]["vector"] < record["cv_nll"]["temperature"] < record["cv_nll"]["none"]
    new_y, new_p = _distorted(900, seed=1)
    temperature = Temperature().fit(np.log(p), y)
    vector_nll, temperature_nll = (_nll(calibrate(c, new_p), new_y) for c in (chosen, temperature))
    assert vector_nll < temperature_nll < _nll(new_p, new_y)
    again = calibrator_from_dict("vector", chosen.parameters(), 4)
    np.testing.assert_array_equal(calibrate(again, new_p), calibrate(chosen, new_p))


def test_too_few_validation_images_fall_back_to_none():
    p = np.full((12, 3), 1 / 3)
    chosen, record = choose_calibrator(p, np.arange(12) % 3)
    assert record["method"] == "none" and "too few" in record["note"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"method": "isotonic"}, "method"),
        ({"method": "temperature", "parameters": {"temperature": -1}}, "temperature"),
        ({"method": "vector", "parameters": {"scale": [1.0], "bias": [0.0]}}, "scale"),
        ({"operating_point": {"class": "mel", "threshold": float("nan")}}, "threshold"),
        ({"settings": {"tta": "none", "prior_correction": "yes"}}, "prior_correction"),
    ],
)
def test_a_damaged_calibration_is_one_line_naming_the_field(workspace, change, field):
    file = workspace / "members" / DEMO_MEMBER / CALIBRATION_FILE
    data = json.loads(file.read_text()) | change
    file.write_text(json.dumps(data))
    from zoo.errors import ZooError

    with pytest.raises(ZooError) as error:
        CalibrationRecord.load(file)
    assert field in str(error.value) and str(file) in str(error.value)
    assert "\n" not in str(error.value)


def _force_calibration(workspace, classes) -> dict:
    """Store a vector scaling that visibly changes the outputs, and a melanoma point."""
    k = len(classes)
    scale = [0.5 + 0.1 * i for i in range(k)]
    bias = [0.2 * (-1) ** i for i in range(k)]
    folder = workspace / "members" / DEMO_MEMBER
    record = CalibrationRecord.load(folder / CALIBRATION_FILE)
    record.method, record.parameters = "vector", {"scale": scale, "bias": bias}
    record.operating_point = {
        "class": "mel", "criterion": "sensitivity", "value": 0.9, "threshold": 0.05,
        "at_least": True, "chosen_on": "val", "val": {"sensitivity": 0.9, "specificity": 0.5},
    }  # fmt: skip
    record.write(folder / CALIBRATION_FILE)
    return record.parameters


def test_every_surface_serves_the_same_calibrated_probabilities_and_flag(
    workspace, tmp_path, capsys
):
    """evaluate, predict, the API, serve's answer and a keras export give the same
    probabilities and the same melanoma flag for the same images."""
    import keras

    import zoo
    from zoo.deploy.serve.answer import operating_point, prediction_answer
    from zoo.inference.members import Member
    from zoo.inference.target import decode_files

    info = json.loads((workspace / "members" / DEMO_MEMBER / "member.json").read_text())
    classes = info["classes"]
    _force_calibration(workspace, classes)
    images = demo_folder(workspace) / "images"
    files = [next(images.glob(f"{i}.*")) for i in info["split"]["ids"]["test"][:8]]
    out = tmp_path / "eval"
    assert main(["evaluate", DEMO_MEMBER, "--workspace", str(workspace), "--bootstrap", "0",
                 "--out", str(out)]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["calibration"]["method"] == "vector" and metrics["calibration"]["stored"]
    scored = _frame(out / "predictions.csv")
    csv, raw_csv = tmp_path / "p.csv", tmp_path / "raw.csv"
    base = ["predict", DEMO_MEMBER, *map(str, files), "--workspace", str(workspace)]
    assert main([*base, "--out", str(csv)]) == 0
    assert main([*base, "--out", str(raw_csv), "--no-calibration"]) == 0
    capsys.readouterr()
    predicted, raw = _frame(csv), _frame(raw_csv)
    want = predicted[classes].to_numpy()
    np.testing.assert_allclose(want, scored.loc[predicted.index, classes].to_numpy(), atol=1e-5)
    assert np.abs(want - raw[classes].to_numpy()).max() > 0.01  # the calibration is applied
    assert (predicted["mel_flag"] == (predicted["mel"] >= 0.05).astype(int)).all()
    assert "mel_flag" not in raw  # the point was chosen on calibrated outputs
    model = zoo.load(DEMO_MEMBER, workspace=workspace)
    api = model.predict(files)
    np.testing.assert_allclose(api[classes].to_numpy(), want, atol=1e-6)
    for (_, row), name in zip(api.iterrows(), predicted.index, strict=True):
        answer = prediction_answer(row, target=model, classes=classes, image=name)
        assert answer["flag"]["threshold"] == 0.05
        top = max(classes, key=lambda c: row[c])
        assert answer["flag"]["flagged"] == bool(predicted.loc[name, "mel_flag"] or top == "mel")
    assert operating_point(model)["val_specificity"] == 0.5
    export = tmp_path / "export"
    assert main(["export", DEMO_MEMBER, "--workspace", str(workspace), "--out", str(export),
                 "--quiet"]) == 0  # fmt: skip
    pixels = decode_files(files, Member(workspace / "members" / DEMO_MEMBER))
    artifact = keras.saving.load_model(export / "model.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(artifact(pixels)), want, atol=1e-5)
    signature = json.loads((export / "signature.json").read_text())
    assert signature["calibration"]["method"] == "vector"
    assert signature["operating_point"]["threshold"] == 0.05
