"""The Python API: ``zoo.load(...).predict``, ``zoo.train``, ``zoo.evaluate``; quiet and cheap."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_MEMBER, write_image
from PIL import Image

import zoo
from zoo import console
from zoo.cli.main import main
from zoo.errors import ZooError

REPO = Path(__file__).resolve().parents[1]


def test_import_zoo_stays_cheap():
    """``import zoo`` and touching the API's names import no TensorFlow, Keras or pandas."""
    code = (
        "import sys, zoo, zoo.api; zoo.load; zoo.train; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'pandas', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_fresh_process_prints_nothing(trained_workspace, tmp_path):
    """No TensorFlow start-up lines, progress bars or notes from load and predict."""
    image = write_image(tmp_path / "a.png", size=40)
    code = (
        "import sys, zoo; "
        f"m = zoo.load({DEMO_MEMBER!r}, workspace=sys.argv[1]); "
        "assert len(m.predict(sys.argv[2])) == 1"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(trained_workspace), str(image)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_evaluate_is_the_api_function_and_the_module_stays():
    import zoo.api
    import zoo.evaluation.evaluate as module

    assert zoo.evaluate is zoo.api.evaluate and callable(zoo.evaluate)
    assert module.evaluate_target is not None  # the library call is still there


@pytest.fixture(scope="module")
def model(trained_workspace):
    return zoo.load(DEMO_MEMBER, workspace=trained_workspace)


def test_load_gives_the_target(model, trained_workspace):
    assert model.name == DEMO_MEMBER and model.kind == "member"
    assert model.path == (trained_workspace / "members" / DEMO_MEMBER).resolve()
    assert model.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    by_path = zoo.load(model.path)
    assert by_path.name == model.name
    with pytest.raises(ZooError, match="no member or ensemble 'small_cnn.demo.s9'.*Did you mean"):
        zoo.load("small_cnn.demo.s9", workspace=trained_workspace)


def test_path_array_pil_and_bytes_give_the_same_frame(model, tmp_path, capfd):
    png = write_image(tmp_path / "lesion.png", size=48, seed=3)
    jpeg = write_image(tmp_path / "small.jpg", size=24, seed=4)  # too small for reduced decoding
    capfd.readouterr()
    for file in (png, jpeg):
        expected = model.predict(file)
        assert list(expected.index) == [file.stem]
        flag = [model.operating_point.column] if model.operating_point is not None else []
        assert list(expected.columns) == [*model.classes, *flag, "top_class"]
        assert expected.loc[file.stem, "top_class"] == expected[model.classes].iloc[0].idxmax()
        with Image.open(file) as image:
            pixels = np.asarray(image.convert("RGB"))
            forms = [pixels, image, file.read_bytes(), io.BytesIO(file.read_bytes()), str(file)]
            for form in forms:
                got = model.predict(form)
                pd.testing.assert_frame_equal(
                    got.reset_index(drop=True), expected.reset_index(drop=True), check_exact=True
                )
    both = model.predict(np.stack([pixels, pixels[::-1]]))
    assert list(both.index) == ["image0", "image1"]
    alone = model.predict(pixels[::-1])  # a batch of one: the model's sums may differ in order
    np.testing.assert_allclose(
        both[model.classes].iloc[1].to_numpy(float),
        alone[model.classes].iloc[0].to_numpy(float),
        rtol=1e-5,
        atol=1e-9,
    )
    assert capfd.readouterr() == ("", "")  # quiet: no progress bars, notes or TensorFlow lines


def test_predict_equals_zoo_predict(model, trained_workspace, tmp_path, capsys):
    files = [write_image(tmp_path / f"img{i}.png", size=40, seed=10 + i) for i in range(3)]
    out = tmp_path / "p.csv"
    argv = ["predict", DEMO_MEMBER, *map(str, files), "--workspace", str(trained_workspace)]
    assert main([*argv, "--out", str(out), "--ood-scores", "--quiet"]) == 0
    cli = pd.read_csv(out, index_col="image")
    api = model.predict([str(f) for f in files], ood_scores=True)
    assert list(api.index) == list(cli.index)
    np.testing.assert_allclose(api[cli.columns].to_numpy(), cli.to_numpy(), rtol=0, atol=1e-12)
    raw = model.predict(files, prior_correction=False)
    assert not np.allclose(raw[model.classes], api[model.classes], rtol=1e-3, atol=0)


def test_bad_images_are_one_line_errors(model, tmp_path):
    with pytest.raises(ZooError, match=r"must be uint8 RGB .* got float64 \(8, 8, 3\)"):
        model.predict(np.zeros((8, 8, 3)))
    with pytest.raises(ZooError, match="no such file or folder"):
        model.predict(tmp_path / "missing.jpg")
    with pytest.raises(ZooError, match="expected a file path, a PIL image"):
        model.predict([42])
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ZooError, match=r"cannot read .*text.jpg: not a readable image"):
        model.predict(tmp_path / "text.jpg")


def test_quiet_in_a_jupyter_like_console(model, tmp_path, monkeypatch, capfd):
    """Under Jupyter rich would draw progress as a widget: the API keeps it off unless asked."""
    for c in (console.console, console.err_console):
        monkeypatch.setattr(c, "is_jupyter", True)
    with console.quiet_unless(False):
        assert console.progress().disable
    with console.quiet_unless(True):
        assert not console.progress().disable  # progress=True shows bars in a notebook
    assert not console.is_quiet()  # the setting before comes back
    model.predict(write_image(tmp_path / "a.png", size=32))
    assert capfd.readouterr() == ("", "")


def test_train_wraps_the_trainer(trained_workspace, monkeypatch):
    from zoo.training import trainer

    seen = {}

    def fake_train(options):
        seen["options"] = options
        return trained_workspace / "members" / DEMO_MEMBER

    monkeypatch.setattr(trainer, "train", fake_train)
    result = zoo.train(
        "small_cnn", data="demo", workspace=trained_workspace, epochs=1, image_size=32, seed=0
    )
    options = seen["options"]
    assert (options.recipe, options.data, options.epochs, options.image_size) == (
        "small_cnn",
        "demo",
        1,
        32,
    )
    assert options.workspace == trained_workspace.resolve()
    info = json.loads((result.path / "member.json").read_text())
    assert result.name == DEMO_MEMBER and result.metrics == info["metrics"]
    assert result.load().name == DEMO_MEMBER
    with pytest.raises(ZooError, match="unknown option.*epoch.*Did you mean epochs"):
        zoo.train("small_cnn", workspace=trained_workspace, epoch=1)


def test_evaluate_returns_the_metrics(workspace, capfd):
    result = zoo.evaluate(DEMO_MEMBER, workspace=workspace, bootstrap=0)
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert result.metrics == metrics and result.target == DEMO_MEMBER
    assert result.target_path == (workspace / "members" / DEMO_MEMBER).resolve()
    assert result.path.parent == workspace / "evaluations"
    assert result.balanced_accuracy == metrics["aggregate"]["balanced_accuracy"]
    again = zoo.evaluate(zoo.load(DEMO_MEMBER, workspace=workspace), bootstrap=0, tta="none")
    assert again.path == result.path and again.balanced_accuracy == result.balanced_accuracy
    assert capfd.readouterr() == ("", "")
    with pytest.raises(ZooError, match="unknown option.*bootstraps.*Did you mean bootstrap"):
        zoo.evaluate(DEMO_MEMBER, workspace=workspace, bootstraps=0)


def test_notes_travel_with_the_frame(workspace, tmp_path):
    """Quiet, but not silent: why a column is missing is in ``frame.attrs["notes"]``."""
    import shutil

    shutil.rmtree(workspace / "cache" / "ood", ignore_errors=True)
    member_json = workspace / "members" / DEMO_MEMBER / "member.json"
    info = json.loads(member_json.read_text())
    info["data"]["source"] = f"folder:{tmp_path / 'moved'}"
    member_json.write_text(json.dumps(info))
    image = write_image(tmp_path / "one.png", size=40, seed=3)
    frame = zoo.load(DEMO_MEMBER, workspace=workspace).predict(image, ood_scores=True)
    assert "ood_msp" in frame.columns and "ood_mahalanobis" not in frame.columns
    assert any("no mahalanobis OOD score" in note for note in frame.attrs["notes"])


# Each wrong kind of value for each API keyword: one ZooError naming the option, never a bare
# TypeError or ValueError from deep inside (and no member or evaluation written).
BAD_TRAIN_OPTIONS = [
    {"image_size": "big"},
    {"image_size": 0},
    {"batch_size": 10**11},
    {"batch_size": 2.5},
    {"seed": -1},
    {"seed": 2**32},
    {"seed": "0"},
    {"split_seed": None},
    {"epochs": "x"},
    {"epochs": 0},
    {"epochs": True},
    {"fold": -1},
    {"folds": "5"},
    {"resume": "yes"},
    {"mixed_precision": 1},
    {"feature_cache": None},
    {"crop_borders": "no"},
    {"weights": 5},
    {"name": ""},
    {"strategy": "tpu"},
    {"jit_compile": True},
    {"settings": "stages.1.epochs=1"},
    {"extra": []},
]


@pytest.mark.parametrize("options", BAD_TRAIN_OPTIONS, ids=lambda o: f"{o}")
def test_train_refuses_a_wrong_value_with_one_line(options, tmp_path):
    (name,) = options
    with pytest.raises(ZooError, match=rf"\b{name}\b") as caught:
        zoo.train("small_cnn", workspace=tmp_path / "ws", **options)
    assert "\n" not in str(caught.value) and repr(options[name]) in str(caught.value)
    assert not (tmp_path / "ws" / "members").exists()


BAD_EVALUATE_OPTIONS = [
    {"split": 3},
    {"split": "nope"},
    {"tta": 5},
    {"tta": "sideways"},
    {"prior_correction": "yes"},
    {"ignore_unmapped": 1},
    {"bootstrap": -1},
    {"bootstrap": "many"},
    {"calibrate": "on"},
    {"operating_points": "mel:sensitivity=0.9"},
    {"operating_points": [0.9]},
    {"tsne": "yes"},
    {"task": 7},
    {"label_map": ["a"]},
    {"target_priors": 0.5},
    {"out": 5},
]


@pytest.mark.parametrize("options", BAD_EVALUATE_OPTIONS, ids=lambda o: f"{o}")
def test_evaluate_refuses_a_wrong_value_with_one_line(options, workspace):
    (name,) = options
    before = sorted(p.name for p in (workspace / "evaluations").glob("*"))
    with pytest.raises(ZooError, match=rf"\b{name}\b|{options[name]!r}") as caught:
        zoo.evaluate(DEMO_MEMBER, workspace=workspace, **options)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in (workspace / "evaluations").glob("*")) == before


BAD_PREDICT_OPTIONS = [
    {"tta": 5},
    {"tta": "sideways"},
    {"prior_correction": "no"},
    {"target_priors": 0.3},
    {"ood_scores": "yes"},
    {"calibrated": None},
    {"progress": 1},
]


@pytest.mark.parametrize("options", BAD_PREDICT_OPTIONS, ids=lambda o: f"{o}")
def test_predict_refuses_a_wrong_value_with_one_line(options, model, tmp_path):
    (name,) = options
    with pytest.raises(ZooError, match=rf"\b{name}\b|{options[name]!r}") as caught:
        model.predict(write_image(tmp_path / "a.png", size=32), **options)
    assert "\n" not in str(caught.value)
