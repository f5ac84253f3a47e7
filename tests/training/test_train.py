"""zoo.training.trainer: a member round trip on the demo set, resume, two-stage recipes."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from zoo.data import images
from zoo.data.images import load_images
from zoo.data.loading import load_dataset
from zoo.data.splits import make_split
from zoo.errors import DataProblems, ZooError
from zoo.inference.members import Member, list_members
from zoo.scoring.headline import headline_metrics
from zoo.store import read_predictions
from zoo.training import trainer
from zoo.training.trainer import TrainOptions, train

TINY = """\
name = "{name}"
source = "zoo tests: a tiny from-scratch CNN"
backbone = "small_cnn"
weights = "none"
batch_size = 32
class_weight = "effective"

[input]
size = 32
preprocessing = "unit"
crop_borders = true

[backbone_options]
widths = [8, 16]
convs_per_stage = 1

[optimizer]
name = "adam"

[augment]
flip = "horizontal_and_vertical"
"""

ONE_STAGE = """
[[stages]]
name = "from scratch"
epochs = 3
learning_rate = 0.003
"""

TWO_STAGES = """
[[stages]]
name = "head on the frozen backbone"
epochs = 1
learning_rate = 0.01
trainable = "head"
augment = false

[[stages]]
name = "all layers"
epochs = 1
learning_rate = 0.003
trainable = "all"
schedule = { name = "cosine", warmup = 0.5 }
"""


def _workspace_with_demo(root: Path, demo_workspace: Path) -> Path:
    (root / "data").mkdir(parents=True)
    for entry in (demo_workspace / "data").iterdir():
        (root / "data" / entry.name).symlink_to(entry, target_is_directory=True)
    return root


def _write_recipe(workspace: Path, name: str, stages: str) -> None:
    (workspace / "recipes").mkdir(exist_ok=True)
    (workspace / "recipes" / f"{name}.toml").write_text(TINY.format(name=name) + stages)


@pytest.fixture(scope="module")
def member(tmp_path_factory, demo_workspace):
    """small_cnn trained for 2 epochs at 32 px on the demo set (shared by this module)."""
    workspace = _workspace_with_demo(tmp_path_factory.mktemp("train"), demo_workspace)
    options = TrainOptions(recipe="small_cnn", workspace=workspace, image_size=32, epochs=2)
    path = train(options)
    return path, workspace


@pytest.mark.slow
def test_member_directory(member):
    path, workspace = member
    assert path == workspace / "members" / "small_cnn.demo.s0"
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == [
        "calibration.json",
        "card.md",
        "history.csv",
        "member.json",
        "model.keras",
        "predictions/test.csv",
        "predictions/test.json",
        "predictions/val.csv",
        "predictions/val.json",
        "train_hashes.npy",
    ]
    assert not (workspace / "runs" / "small_cnn.demo.s0").exists()
    assert not [p for p in (workspace / "members").iterdir() if p.name.startswith(".")]
    assert "not for diagnosis" in (path / "card.md").read_text().lower()


@pytest.mark.slow
def test_member_json(member, demo_workspace):
    path, _ = member
    info = json.loads((path / "member.json").read_text())
    dataset = load_dataset("demo", workspace=demo_workspace)
    assert info["name"] == "small_cnn.demo.s0" and info["recipe"] == "small_cnn"
    recipe = info["config"]["recipe"]
    assert recipe["name"] == "small_cnn" and recipe["input"]["size"] == 32
    assert sum(s["epochs"] for s in recipe["stages"]) == 2
    assert info["config"]["options"]["seed"] == 0
    assert info["classes"] == list(dataset.classes)
    assert info["weights"] == "none"
    priors = info["priors"]
    split = make_split(dataset, seed=0)
    train_counts = dataset.subset(split.train).class_counts()
    assert priors["train_counts"] == [train_counts[c] for c in dataset.classes]
    assert sum(priors["effective"]) == pytest.approx(1.0)
    assert info["input"]["size"] == 32 and info["input"]["preprocessing"] == "unit"
    assert info["input"]["crop_borders"] is True and info["input"]["range"] == [0, 255]
    assert info["data"]["fingerprint"] == dataset.fingerprint
    assert info["data"]["count"] == 420 and info["data"]["demo"] is True
    assert info["split"]["seed"] == 0
    for part in ("train", "val", "test"):
        assert info["split"]["ids"][part] == list(split.ids(part))
    assert {"keras", "tensorflow", "numpy", "zoo"} <= set(info["versions"])
    assert info["versions"]["keras"] == keras.__version__
    training = info["training"]
    assert training["seconds"] > 0 and training["epochs_run"] == 2
    assert training["best_epoch"] in (1, 2)
    import zoo.models.layers  # noqa: F401  (the custom layers the saved model uses)
    import zoo.training.augment  # noqa: F401

    model = keras.saving.load_model(path / "model.keras", safe_mode=True)
    assert training["parameters"] == sum(int(np.prod(w.shape)) for w in model.weights)
    for part in ("val", "test"):  # the headline scores of the predictions written beside
        probs = read_predictions(path / "predictions" / f"{part}.csv")
        labels = dataset.records.loc[probs.index, "label"].map(info["classes"].index)
        predicted = probs.to_numpy().argmax(axis=1)
        metrics = info["metrics"][part]
        assert metrics["balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(labels, predicted), abs=1e-12
        )
        assert metrics["accuracy"] == pytest.approx(np.mean(predicted == labels), abs=1e-12)
        aucs = [roc_auc_score(labels == c, probs.iloc[:, c]) for c in sorted(set(labels))]
        assert metrics["macro_auc"] == pytest.approx(np.mean(aucs), abs=1e-12)
        assert metrics["n_images"] == len(split.ids(part)) == len(probs)


@pytest.mark.slow
def test_predictions_and_history(member):
    path, _ = member
    info = json.loads((path / "member.json").read_text())
    for part in ("val", "test"):
        raw = pd.read_csv(path / "predictions" / f"{part}.csv")
        assert list(raw.columns) == ["image", *info["classes"]]  # ISIC prediction format
        assert raw["image"].tolist() == info["split"]["ids"][part]
        np.testing.assert_allclose(raw[info["classes"]].sum(axis=1), 1.0, atol=1e-5)
    history = pd.read_csv(path / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    for column in ("loss", "val_loss", "val_balanced_accuracy", "learning_rate", "seconds"):
        assert history[column].notna().all(), column
    best = int(history["val_balanced_accuracy"].idxmax()) + 1
    assert info["training"]["best_epoch"] == best


@pytest.mark.slow
def test_saved_model_loads_safely_and_reproduces_cached_predictions(member, demo_workspace):
    path, _ = member
    import zoo.models.layers  # noqa: F401
    import zoo.training.augment  # noqa: F401

    model = keras.saving.load_model(path / "model.keras", safe_mode=True)
    info = json.loads((path / "member.json").read_text())
    dataset = load_dataset("demo", workspace=demo_workspace)
    table = load_images(
        dataset,
        size=info["input"]["size"],
        crop_borders=info["input"]["crop_borders"],
        interpolation=info["input"]["interpolation"],
    )
    cached = read_predictions(path / "predictions" / "test.csv")
    pixels = table.take(list(cached.index)).astype("float32")
    probs = model.predict(pixels, batch_size=64, verbose=0)
    np.testing.assert_allclose(probs, cached.to_numpy(), atol=1e-5)
    assert Member(path).classes == info["classes"]


@pytest.mark.slow
def test_training_an_existing_member_again_is_an_error(member):
    _, workspace = member
    options = TrainOptions(recipe="small_cnn", workspace=workspace, image_size=32, epochs=2)
    with pytest.raises(ZooError, match="'small_cnn.demo.s0' already exists.*--name"):
        train(options)


@pytest.mark.slow
def test_members_command_lists_it(member, capsys, monkeypatch):
    from zoo.cli.main import main

    _, workspace = member
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["members", "--workspace", str(workspace)]) == 0
    out = capsys.readouterr().out
    assert "small_cnn.demo.s0" in out and "1 members" in out
    assert [m.name for m in list_members(workspace)] == ["small_cnn.demo.s0"]


@pytest.mark.slow
def test_resume_after_an_interruption(tmp_path, demo_workspace, monkeypatch, capsys):
    workspace = _workspace_with_demo(tmp_path / "ws", demo_workspace)
    _write_recipe(workspace, "tiny_cnn", ONE_STAGE)
    options = dict(recipe="tiny_cnn", workspace=workspace, image_size=32, epochs=3, name="tiny")
    original = trainer._save_checkpoint
    calls = []

    def interrupt_once(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_save_checkpoint", interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        train(TrainOptions(**options))
    run = workspace / "runs" / "tiny"
    assert not (workspace / "members" / "tiny").exists()
    assert list_members(workspace) == []
    assert (run / "state.json").is_file() and (run / "checkpoint.keras").is_file()
    state = json.loads((run / "state.json").read_text())
    assert state["epochs_done"] == 1 and len(state["history"]) == 1

    with pytest.raises(ZooError, match="interrupted run of 'tiny'.*--resume"):
        train(TrainOptions(**options))

    capsys.readouterr()
    path = train(TrainOptions(**options, resume=True))
    assert "Resuming tiny after epoch 1 of 3" in capsys.readouterr().out
    assert len(calls) == 3  # epochs 2 and 3 only: training went on, it did not start over
    assert path == workspace / "members" / "tiny" and (path / "model.keras").is_file()
    assert not run.exists()
    history = pd.read_csv(path / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history["loss"].iloc[0] == pytest.approx(state["history"][0]["loss"])
    info = json.loads((path / "member.json").read_text())
    assert info["training"]["epochs_run"] == 3
    assert info["split"] == state["split"]

    capsys.readouterr()  # --resume with nothing to resume starts from epoch 1, saying so
    other = train(TrainOptions(**{**options, "name": "other", "epochs": 1}, resume=True))
    assert "no checkpoint of this run" in " ".join(capsys.readouterr().out.split())
    assert (other / "model.keras").is_file()


@pytest.mark.slow
def test_early_stopping_ends_training_when_validation_does_not_improve(
    tmp_path, demo_workspace, monkeypatch, capsys
):
    """``early_stopping = 1`` on a 3-epoch recipe: epoch 2 scores no better than epoch 1 (a
    tie is no improvement), so training stops there and the member keeps epoch 1's weights.
    The monitor's validation score is forced, so the outcome does not hang on training."""
    from zoo.training import monitor

    workspace = _workspace_with_demo(tmp_path / "ws", demo_workspace)
    (workspace / "recipes").mkdir()
    text = TINY.format(name="tiny_patient") + ONE_STAGE
    text = text.replace(
        'class_weight = "effective"\n', 'class_weight = "effective"\nearly_stopping = 1\n'
    )
    (workspace / "recipes" / "tiny_patient.toml").write_text(text)
    scores, predicted = iter([0.5, 0.5, 0.9]), []

    def forced(labels, labels_predicted):
        predicted.append(np.asarray(labels_predicted).copy())
        return next(scores)

    monkeypatch.setattr(monitor, "balanced_accuracy", forced)
    capsys.readouterr()
    options = TrainOptions(recipe="tiny_patient", workspace=workspace, image_size=32, epochs=3)
    path = train(options)
    out = " ".join(capsys.readouterr().out.split())
    assert "early stop: no better validation balanced accuracy for 1 epochs" in out
    assert len(predicted) == 2  # validated twice: epoch 3 never ran
    info = json.loads((path / "member.json").read_text())
    assert info["config"]["recipe"]["early_stopping"] == 1
    assert sum(s["epochs"] for s in info["config"]["recipe"]["stages"]) == 3
    assert info["training"]["epochs_run"] == 2 and info["training"]["best_epoch"] == 1
    history = pd.read_csv(path / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert history["val_balanced_accuracy"].tolist() == [0.5, 0.5]
    assert history["best"].tolist() == [True, False]
    # the member is epoch 1's model: its validation predictions are the ones epoch 1 scored
    val = read_predictions(path / "predictions" / "val.csv")
    np.testing.assert_array_equal(val.to_numpy().argmax(axis=1), predicted[0])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_two_stage_recipe_with_feature_cache(tmp_path, demo_workspace, capsys):
    workspace = _workspace_with_demo(tmp_path / "ws", demo_workspace)
    _write_recipe(workspace, "tiny_two_stage", TWO_STAGES)
    path = train(
        TrainOptions(recipe="tiny_two_stage", workspace=workspace, image_size=32, epochs=2)
    )
    out = capsys.readouterr().out
    assert "stage 1/2 (head on the frozen backbone)" in out and "features cached" in out
    assert "stage 2/2 (all layers)" in out
    history = pd.read_csv(path / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert history["stage"].str.startswith("stage 1/2").tolist() == [True, False]
    info = json.loads((path / "member.json").read_text())
    assert [s["trainable"] for s in info["config"]["recipe"]["stages"]] == ["head", "all"]
    predictions = read_predictions(path / "predictions" / "test.csv")
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-5)


HEAD_ONLY = """
[[stages]]
name = "head on the frozen backbone"
epochs = 2
learning_rate = 0.01
trainable = "head"
augment = false
"""


@pytest.mark.slow
def test_feature_cached_head_training_matches_the_slow_path(tmp_path, demo_workspace, capsys):
    """Training the head on features computed once gives the model that running the frozen
    backbone every step gives: same head weights, same predictions (float tolerance)."""
    workspace = _workspace_with_demo(tmp_path / "ws", demo_workspace)
    _write_recipe(workspace, "tiny_head", HEAD_ONLY)  # no dropout: both paths are deterministic
    options = dict(recipe="tiny_head", workspace=workspace, image_size=32, jit_compile="off")
    fast = train(TrainOptions(**options, name="fast", feature_cache=True))
    assert "features cached" in capsys.readouterr().out
    slow = train(TrainOptions(**options, name="slow", feature_cache=False))
    assert "features cached" not in capsys.readouterr().out

    fast_model = keras.saving.load_model(fast / "model.keras", safe_mode=True)
    slow_model = keras.saving.load_model(slow / "model.keras", safe_mode=True)
    for a, b in zip(fast_model.weights, slow_model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
    np.testing.assert_allclose(
        read_predictions(fast / "predictions" / "test.csv").to_numpy(),
        read_predictions(slow / "predictions" / "test.csv").to_numpy(),
        atol=1e-5,
    )
    fast_history = pd.read_csv(fast / "history.csv")
    slow_history = pd.read_csv(slow / "history.csv")
    np.testing.assert_allclose(fast_history["loss"], slow_history["loss"], rtol=1e-4)


def test_default_name_carries_identity():
    dataset = type("D", (), {"name": "ham10000"})()
    options = TrainOptions(recipe="inception_v3", workspace=Path("."), seed=2)
    assert trainer.default_name("inception_v3", dataset, options) == "inception_v3.ham10000.s2"
    options.fold = 3
    assert trainer.default_name("inception_v3", dataset, options) == "inception_v3.ham10000.s2.f3"


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_headline_metrics():
    labels = np.array([0, 0, 1, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2]] * 0.9 + 0.1 / 3
    metrics = headline_metrics(labels, probs)
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    auc = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert metrics["n_images"] == 5 and metrics["macro_auc"] == pytest.approx(auc, abs=1e-12)
    assert headline_metrics(np.array([1, 1]), probs[:2])["macro_auc"] is None


def test_every_data_problem_is_reported_at_once_before_the_model_is_built(
    tmp_path, write_ham10000, write_images, monkeypatch
):
    """A truncated image, an unknown label and a class too small for the split: one error."""
    folder = write_ham10000(tmp_path / "ham", lesions=10)
    meta = pd.read_csv(folder / "HAM10000_metadata.csv")
    meta.loc[meta["dx"] == "df", "lesion_id"] = "HAM_df_only"  # one lesion of df
    meta.loc[0, "dx"] = "xyz"  # unknown label on line 2
    meta.to_csv(folder / "HAM10000_metadata.csv", index=False)
    truncated = folder / "images" / f"{meta['image_id'][20]}.jpg"
    (big,) = write_images(tmp_path / "big", ["big.jpg"], size=96)
    truncated.write_bytes(big.read_bytes()[: big.stat().st_size // 2])

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the data set was checked")

    monkeypatch.setattr(trainer, "build_model", no_model)
    workspace = tmp_path / "ws"
    options = TrainOptions(
        recipe="small_cnn", workspace=workspace, data=str(folder), image_size=32, epochs=1
    )
    with pytest.raises(DataProblems) as info:
        train(options)
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert f"line 2 (image {meta['image_id'][0]}): unknown label 'xyz'" in problems[0]
    assert f"image {meta['image_id'][20]} ({truncated}): unreadable or truncated" in problems[1]
    assert problems[2].startswith("class df has 1 lesion(s) (10 image(s)), fewer than the 3")
    assert str(info.value).startswith(f"3 problem(s) in data set ham10000:{folder}")
    assert not (workspace / "runs").exists() and not any(workspace.glob("members/*"))


def test_crop_borders_override_reaches_the_resolved_recipe(tmp_path, demo_workspace, monkeypatch):
    """``--crop-borders/--no-crop-borders`` replaces the recipe's ``[input] crop_borders``;
    None keeps it (small_cnn crops). The pixels are decoded with the resolved setting."""
    monkeypatch.setattr(images, "_MEMORY", {})  # decode here, whatever earlier tests kept
    workspace = _workspace_with_demo(tmp_path / "ws", demo_workspace)
    for flag, expected in ((None, True), (False, False)):
        options = TrainOptions(
            recipe="small_cnn", workspace=workspace, image_size=32, epochs=1, crop_borders=flag
        )
        run = trainer._resolve(options)
        assert run.recipe.input.crop_borders is expected
        assert run.recipe.as_dict()["input"]["crop_borders"] is expected
        assert options.to_dict()["crop_borders"] is flag
        assert run.pixels.pixels.shape == (len(run.dataset), 32, 32, 3)
    assert len(list((workspace / "cache" / "images").glob("*.npy"))) == 2
