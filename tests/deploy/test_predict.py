"""zoo predict: ISIC CSV of class probabilities for image files and folders."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zoo.cli.main import main
from zoo.data import load_dataset
from zoo.data.sources import collect_images
from zoo.inference.members import Member
from zoo.scoring.priors import PriorCorrection
from zoo.store import read_predictions

NAME = "small_cnn.demo.s0"
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.fixture(scope="module")
def test_images(trained_workspace, tmp_path_factory) -> Path:
    """The member's test images as ``<id>.jpg`` in one folder."""
    folder = tmp_path_factory.mktemp("test-images")
    member = Member(trained_workspace / "members" / NAME)
    demo = load_dataset("demo", workspace=trained_workspace)
    for image_id in member.split_ids("test"):
        shutil.copy(demo.records.loc[image_id, "path"], folder / f"{image_id}.jpg")
    return folder


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_csv(text_or_path) -> pd.DataFrame:
    return pd.read_csv(text_or_path, dtype={"image": str})


def test_collect_images_recurses_and_skips_hidden_and_other_files(tmp_path):
    for name in ("a/x.jpg", "a/deep/y.PNG", "b/x.jpeg", ".hidden/z.jpg", "a/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = collect_images([str(tmp_path), str(tmp_path / "a" / "x.jpg")])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/deep/y.PNG",
        "a/x.jpg",
        "b/x.jpeg",
    ]


def test_predict_folder_writes_an_isic_csv(trained_workspace, test_images, tmp_path, capsys):
    folder = tmp_path / "pics"
    files = sorted(test_images.iterdir())[:12]
    for sub, chunk in (("a", files[:8]), ("b/c", files[6:12])):  # two stems in both
        (folder / sub).mkdir(parents=True)
        for f in chunk:
            shutil.copy(f, folder / sub / f.name)
    out = tmp_path / "predictions.csv"
    code, _, err = run(
        capsys, "predict", NAME, folder, "--out", out, "--workspace", trained_workspace
    )
    assert code == 0, err
    frame = read_csv(out)
    flag = ["mel_flag"] if "mel_flag" in frame else []  # where the member has an operating point
    assert list(frame.columns) == ["image", *CLASSES, *flag]
    assert len(frame) == 14 and frame["image"].is_unique
    assert {"a/" + files[6].stem, "b/c/" + files[6].stem} <= set(frame["image"])
    assert files[0].stem in set(frame["image"])
    values = frame[CLASSES].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-9)
    # what zoo serves: the member's cached test outputs, prior-corrected, then calibrated as
    # its calibration.json says (the files are copies of test images, named by their ids)
    member = Member(trained_workspace / "members" / NAME)
    cached = read_predictions(member.predictions_file("test"))
    served = PriorCorrection().fit(pd.Series(member.effective_priors, index=CLASSES))
    served = served.transform(cached)[CLASSES].to_numpy()
    stored = json.loads((trained_workspace / "members" / NAME / "calibration.json").read_text())
    assert stored["method"] in ("none", "temperature"), stored["method"]
    if stored["method"] == "temperature":
        z = np.log(np.clip(served, 1e-12, None)) / stored["parameters"]["temperature"]
        served = np.exp(z - z.max(axis=1, keepdims=True))
        served /= served.sum(axis=1, keepdims=True)
    rows = [cached.index.get_loc(name.rsplit("/", 1)[-1]) for name in frame["image"]]
    np.testing.assert_allclose(values, served[rows], atol=1e-5)


def test_predict_equals_the_evaluated_probabilities(trained_workspace, test_images, capsys):
    """Same pixels, same model: predict's raw output is the member's cached test.csv."""
    argv = ["predict", NAME, test_images, "--workspace", trained_workspace]
    code, stdout, err = run(capsys, *argv, "--no-prior-correction")
    assert code == 0, err
    raw = read_csv(io.StringIO(stdout)).set_index("image").sort_index()  # stdout is pure CSV
    member = Member(trained_workspace / "members" / NAME)
    cached = read_predictions(member.predictions_file("test")).sort_index()
    np.testing.assert_allclose(raw, cached, atol=2e-6)

    code, stdout, _ = run(capsys, *argv, "--no-calibration")
    corrected = read_csv(io.StringIO(stdout)).set_index("image").sort_index()[CLASSES]
    priors = pd.Series(member.effective_priors, index=CLASSES)
    np.testing.assert_allclose(corrected, PriorCorrection().fit(priors).transform(raw), atol=1e-12)


def test_predict_target_priors_and_sidecar(trained_workspace, test_images, tmp_path, capsys):
    """--target-priors re-weights the output; FILE.csv.json says how FILE.csv was made."""
    files = sorted(test_images.iterdir())[:6]
    argv = ["predict", NAME, *files, "--workspace", trained_workspace]
    code, stdout, err = run(capsys, *argv, "--no-prior-correction")
    assert code == 0, err
    raw = read_csv(io.StringIO(stdout)).set_index("image")
    priors_file = tmp_path / "clinic.json"
    priors_file.write_text(json.dumps({c: (3.0 if c == "mel" else 1.0) for c in CLASSES}))
    out = tmp_path / "out.csv"
    code, _, err = run(capsys, *argv, "--target-priors", priors_file, "--out", out)
    assert code == 0, err
    got = read_csv(out).set_index("image")
    member = Member(trained_workspace / "members" / NAME)
    trained = pd.Series(member.effective_priors, index=CLASSES)
    wanted = pd.Series({c: (3 / 9 if c == "mel" else 1 / 9) for c in CLASSES})
    expected = PriorCorrection(target_priors=wanted).fit(trained).transform(raw)
    np.testing.assert_allclose(got, expected, atol=1e-9)

    record = json.loads((tmp_path / "out.csv.json").read_text())
    assert record["predictions"] == "out.csv" and record["n_images"] == 6
    assert record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert record["target"]["name"] == NAME and record["classes"] == CLASSES
    assert record["tta"] == "none" and record["tta_scheme"]["n_views"] == 1
    assert record["prior_correction"] is True
    priors = record["priors"]
    assert priors["correction"] is True and priors["target_priors_source"] == str(priors_file)
    assert priors["target_priors"] == pytest.approx(wanted.to_dict())
    assert priors["training_priors"] == pytest.approx(trained.to_dict())
    assert any("normalised to 1" in note for note in record["notes"])

    code, _, err = run(capsys, *argv, "--no-prior-correction", "--out", out)
    assert code == 0, err
    record = json.loads((tmp_path / "out.csv.json").read_text())
    assert record["prior_correction"] is False and record["priors"]["training_priors"] is None


def test_predict_bad_target_priors_exit_2(trained_workspace, test_images, tmp_path, capsys):
    priors_file = tmp_path / "bad.json"
    priors_file.write_text(json.dumps({c: 1.0 for c in CLASSES} | {"nv": -1}))
    image = next(test_images.iterdir())
    argv = ["predict", NAME, image, "--workspace", trained_workspace, "--target-priors"]
    code, stdout, err = run(capsys, *argv, priors_file)
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert f"--target-priors {priors_file}: class 'nv' has prior -1" in err


@pytest.mark.slow
def test_predict_with_tta(trained_workspace, test_images, tmp_path, capsys):
    files = sorted(test_images.iterdir())[:5]
    argv = ["predict", NAME, *files, "--workspace", trained_workspace, "--tta"]
    code, steppan, err = run(capsys, *argv, "steppan")
    assert code == 0, err
    code, none, _ = run(capsys, *argv, "none")
    a = read_csv(io.StringIO(steppan)).set_index("image")[CLASSES]  # the probabilities
    b = read_csv(io.StringIO(none)).set_index("image")[CLASSES]
    assert list(a.index) == [f.stem for f in files]
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-6)
    assert not np.allclose(a, b)


def test_unreadable_image_exits_2_naming_it(trained_workspace, test_images, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    good = next(test_images.iterdir())
    code, stdout, err = run(capsys, "predict", NAME, good, bad, "--workspace", trained_workspace)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and str(bad) in err


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_no_images_exits_2(trained_workspace, tmp_path, capsys, kind):
    path = tmp_path / "nothing"
    if kind == "empty":
        path.mkdir()
    code, _, err = run(capsys, "predict", NAME, path, "--workspace", trained_workspace)
    assert code == 2 and err.count("\n") == 1 and str(path) in err
