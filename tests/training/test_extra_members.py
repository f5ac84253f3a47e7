"""Cheap extra members and progressive resizing in a real (tiny) run on the demo set:
snapshots at the ends of cosine-restart cycles, the SWA average with recomputed batch-norm
statistics, a first stage at a smaller image size, and --resume through all of them."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from zoo.data.images import load_images
from zoo.data.loading import load_dataset
from zoo.errors import ZooError
from zoo.recipes.recipe import Recipe
from zoo.recipes.specs import StageSpec, SwaSpec
from zoo.store import read_predictions
from zoo.training import trainer
from zoo.training.averaging import WeightAverage
from zoo.training.extra_members import extra_member_names, made_by
from zoo.training.trainer import TrainOptions, _stage_rate, train

HEAD = """\
name = "{name}"
source = "zoo tests: cheap extra members"
backbone = "small_cnn"
weights = "none"
batch_size = 32

[input]
size = 40
preprocessing = "unit"

[backbone_options]
widths = [8, 16]
convs_per_stage = 1
"""

# 5 epochs: one at 32 px, then two cosine-restart cycles of 2 epochs at 40 px (snapshots at
# global epochs 3 and 5), averaged from the stage's epoch 2 (global 3, 4, 5).
CHEAP = """
[[stages]]
name = "small images"
epochs = 1
learning_rate = 0.003
augment = false
image_size = 32

[[stages]]
name = "cycles"
epochs = 4
learning_rate = 0.01
augment = false
schedule = { name = "cosine_restarts", cycles = 2 }
snapshots = true
swa = { start = 2 }
"""

MEMBER_FILES = {"card.md", "history.csv", "member.json", "model.keras", "predictions/test.csv"}


def _workspace(root: Path, demo_workspace: Path, name: str, stages: str) -> Path:
    (root / "data").mkdir(parents=True)
    for entry in (demo_workspace / "data").iterdir():
        (root / "data" / entry.name).symlink_to(entry, target_is_directory=True)
    (root / "recipes").mkdir()
    (root / "recipes" / f"{name}.toml").write_text(HEAD.format(name=name) + stages)
    return root


def _spy(patch: pytest.MonkeyPatch, seen: dict, sizes: list, interrupt_at: int | None = None):
    """Record the weights at every checkpoint and the image size of the pixels every stage
    trains on; raise KeyboardInterrupt after checkpoint ``interrupt_at``."""
    save, dataset = trainer._save_checkpoint, trainer.training_dataset

    def save_checkpoint(run, model, row, is_best, epoch):
        seen[epoch] = _named(model)
        save(run, model, row, is_best, epoch)
        if epoch == interrupt_at:
            raise KeyboardInterrupt

    def training_dataset(pixels, *args, **kwargs):
        sizes.append(pixels.shape[1])
        return dataset(pixels, *args, **kwargs)

    patch.setattr(trainer, "_save_checkpoint", save_checkpoint)
    patch.setattr(trainer, "training_dataset", training_dataset)


def _named(model) -> dict[str, np.ndarray]:
    """The model's weights by layer and variable name (``stage0_bn0/moving_mean``): the part
    of a variable's path that a saved and loaded model keeps."""
    return {"/".join(v.path.split("/")[-2:]): np.array(v.numpy()) for v in model.weights}


def _weights(path: Path) -> dict[str, np.ndarray]:
    return _named(keras.saving.load_model(path / "model.keras", safe_mode=True))


def _info(path: Path) -> dict:
    return json.loads((path / "member.json").read_text())


def _is_bn_statistic(path: str) -> bool:
    return path.endswith(("moving_mean", "moving_variance"))


@pytest.fixture(scope="module")
def cheap_run(tmp_path_factory, demo_workspace):
    """One run of the CHEAP recipe: (members folder, weights per epoch, sizes per stage)."""
    workspace = _workspace(tmp_path_factory.mktemp("cheap"), demo_workspace, "cheap", CHEAP)
    seen, sizes = {}, []
    with pytest.MonkeyPatch.context() as patch:
        _spy(patch, seen, sizes)
        path = train(TrainOptions(recipe="cheap", workspace=workspace, image_size=40, epochs=5))
    return path.parent, seen, sizes, workspace


@pytest.mark.slow
def test_a_run_saves_its_own_member_and_one_per_snapshot_and_the_average(cheap_run):
    members, seen, _, workspace = cheap_run
    names = sorted(p.name for p in members.iterdir() if not p.name.startswith("."))
    main = "cheap.demo.s0"
    assert names == [main, f"{main}.snap1", f"{main}.snap2", f"{main}.swa"]
    for name in names:
        files = {str(p.relative_to(members / name)) for p in (members / name).rglob("*")}
        assert MEMBER_FILES | {"predictions/val.csv"} <= files, name
        assert _info(members / name)["name"] == name
    assert not (workspace / "runs" / main).exists()
    info = _info(members / main)  # the run's own member: as without the options
    assert "snapshot" not in info and "swa" not in info
    history = pd.read_csv(members / main / "history.csv")
    best = info["training"]["best_epoch"]
    assert best == int(history["val_balanced_accuracy"].idxmax()) + 1
    for key, value in _weights(members / main).items():  # the best epoch's weights
        np.testing.assert_array_equal(value, seen[best][key], err_msg=key)


@pytest.mark.slow
def test_snapshots_are_the_weights_at_the_end_of_each_cycle(cheap_run):
    members, seen, _, _ = cheap_run
    weights = {}
    for cycle, epoch in ((1, 3), (2, 5)):
        path = members / f"cheap.demo.s0.snap{cycle}"
        info = _info(path)
        assert info["snapshot"] == {
            "run": "cheap.demo.s0",
            "stage": "cycles",
            "cycle": cycle,
            "of": 2,
            "epoch": epoch,
        }
        weights[cycle] = _weights(path)
        assert weights[cycle].keys() == seen[epoch].keys()
        for key, value in weights[cycle].items():
            np.testing.assert_array_equal(value, seen[epoch][key], err_msg=key)
        assert f"Snapshot {cycle} of 2 of run `cheap.demo.s0`" in (path / "card.md").read_text()
    kernel = "stage0_conv0/kernel"
    assert not np.allclose(weights[1][kernel], weights[2][kernel])
    first = read_predictions(members / "cheap.demo.s0.snap1" / "predictions" / "test.csv")
    second = read_predictions(members / "cheap.demo.s0.snap2" / "predictions" / "test.csv")
    assert not np.allclose(first.to_numpy(), second.to_numpy())


@pytest.mark.slow
def test_swa_averages_the_epochs_and_recomputes_batchnorm_statistics(cheap_run, demo_workspace):
    members, seen, _, _ = cheap_run
    path = members / "cheap.demo.s0.swa"
    info = _info(path)
    n_train = len(info["split"]["ids"]["train"])
    assert info["swa"] == {
        "run": "cheap.demo.s0",
        "stage": "cycles",
        "epochs": [3, 4, 5],
        "batchnorm_batches": -(-n_train // 32),
    }
    averaged = _weights(path)
    for key, value in averaged.items():
        mean = np.mean([seen[e][key] for e in (3, 4, 5)], axis=0)
        if _is_bn_statistic(key):
            # recomputed for the averaged weights, not averaged; the first batch norm's mean
            # is linear in the kernel before it, so the two agree there (checked below)
            if key != "stage0_bn0/moving_mean":
                assert not np.allclose(value, mean), key
        else:
            np.testing.assert_allclose(value, mean, rtol=1e-6, atol=1e-7, err_msg=key)

    # the first batch norm's statistics: the mean over the recompute's batches (seed 0,
    # batches of 32 of the un-augmented training images at 40 px) of the batch mean and
    # (biased) variance of the first convolution of the averaged weights
    dataset = load_dataset("demo", workspace=demo_workspace)
    table = load_images(dataset, size=40, crop_borders=False, interpolation="bilinear")
    pixels = np.asarray(table.take(info["split"]["ids"]["train"]), dtype=np.float32)
    order = np.random.default_rng(0).permutation(len(pixels))
    means, variances = [], []
    for start in range(0, len(pixels), 32):
        batch = pixels[np.sort(order[start : start + 32])] / 255.0
        conv = keras.ops.convert_to_numpy(
            keras.ops.conv(batch, averaged["stage0_conv0/kernel"], padding="same")
        ).astype(np.float64)
        means.append(conv.mean(axis=(0, 1, 2)))
        variances.append(conv.var(axis=(0, 1, 2)))
    np.testing.assert_allclose(
        averaged["stage0_bn0/moving_mean"], np.mean(means, axis=0), atol=1e-5
    )
    np.testing.assert_allclose(
        averaged["stage0_bn0/moving_variance"], np.mean(variances, axis=0), rtol=1e-4, atol=1e-6
    )
    assert "Stochastic weight average" in (path / "card.md").read_text()


@pytest.mark.slow
def test_progressive_resizing_switches_size_after_the_first_stage(cheap_run):
    members, _, sizes, _ = cheap_run
    assert sizes == [32, 40]  # the pixels each stage's training data set was made of
    for name in ("cheap.demo.s0", "cheap.demo.s0.snap2", "cheap.demo.s0.swa"):
        info = _info(members / name)
        assert info["training"]["image_sizes"] == [32, 40, 40, 40, 40]
        assert info["input"]["size"] == 40
        stages = info["config"]["recipe"]["stages"]
        assert stages[0]["image_size"] == 32 and "image_size" not in stages[1]
        assert stages[1]["snapshots"] is True and stages[1]["swa"]["start"] == 2
    history = pd.read_csv(members / "cheap.demo.s0" / "history.csv")
    assert history["image_size"].tolist() == [32, 40, 40, 40, 40]
    model = keras.saving.load_model(members / "cheap.demo.s0" / "model.keras", safe_mode=True)
    assert model.input_shape == (None, 40, 40, 3)


RESUMED = """
[[stages]]
name = "cycles"
epochs = 4
learning_rate = 0.01
augment = false
schedule = { name = "cosine_restarts", cycles = 2 }
snapshots = true
swa = { start = 2 }
"""


@pytest.mark.slow
def test_resume_goes_on_with_the_snapshots_and_the_average(tmp_path, demo_workspace, monkeypatch):
    workspace = _workspace(tmp_path / "ws", demo_workspace, "cyclic", RESUMED)
    options = dict(recipe="cyclic", workspace=workspace, image_size=32, epochs=4, name="c")
    seen, sizes = {}, []
    _spy(monkeypatch, seen, sizes, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        train(TrainOptions(**options))
    state = json.loads((workspace / "runs" / "c" / "state.json").read_text())
    assert state["extras"] == {
        "snapshots": [
            {"stage": "cycles", "cycle": 1, "of": 2, "epoch": 2, "file": "snapshot-1.weights.h5"}
        ],
        "swa": {"file": "swa-3.npz", "epochs": [2, 3]},
    }
    assert WeightAverage.load(workspace / "runs" / "c" / "swa-3.npz").epochs == [2, 3]
    path = train(TrainOptions(**options, resume=True))
    members = path.parent
    assert sorted(p.name for p in members.iterdir()) == ["c", "c.snap1", "c.snap2", "c.swa"]
    assert _info(members / "c.snap1")["snapshot"]["epoch"] == 2
    assert _info(members / "c.snap2")["snapshot"]["epoch"] == 4
    assert _info(members / "c.swa")["swa"]["epochs"] == [2, 3, 4]
    averaged = _weights(members / "c.swa")
    for key, value in averaged.items():
        if not _is_bn_statistic(key):
            mean = np.mean([seen[e][key] for e in (2, 3, 4)], axis=0)
            np.testing.assert_allclose(value, mean, rtol=1e-6, atol=1e-7, err_msg=key)
    for key, value in _weights(members / "c.snap1").items():
        np.testing.assert_array_equal(value, seen[2][key], err_msg=key)


def test_an_existing_extra_member_stops_a_new_run_before_training(tmp_path, demo_workspace):
    workspace = _workspace(tmp_path / "ws", demo_workspace, "cyclic", RESUMED)
    (workspace / "members" / "c.snap2").mkdir(parents=True)
    options = TrainOptions(recipe="cyclic", workspace=workspace, image_size=32, epochs=4, name="c")
    with pytest.raises(
        ZooError, match=r"member 'c\.snap2' \(an extra member of c\) already exists"
    ):
        trainer._resolve(options)


def test_weight_average_is_the_running_mean_and_survives_a_round_trip(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    rng = np.random.default_rng(0)
    states = [
        [rng.normal(size=w.shape).astype("float32") for w in model.get_weights()] for _ in range(3)
    ]
    average = WeightAverage()
    for epoch, weights in enumerate(states, start=4):
        model.set_weights(weights)
        average.add(model, epoch)
    average.save(tmp_path / "swa.npz")
    again = WeightAverage.load(tmp_path / "swa.npz")
    assert again.epochs == [4, 5, 6]
    again.assign(model)
    for got, *values in zip(model.get_weights(), *states, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, np.mean(values, axis=0), rtol=1e-6)


def test_swa_learning_rate_replaces_the_schedule_once_averaging_begins():
    cosine = {"name": "cosine_restarts", "cycles": 2}
    stage = Recipe.from_dict(
        {
            "name": "x",
            "source": "zoo tests",
            "backbone": "small_cnn",
            "stages": [
                {
                    "name": "s",
                    "epochs": 4,
                    "learning_rate": 0.1,
                    "schedule": cosine,
                    "swa": {"start": 3, "learning_rate": 0.02},
                }
            ],
        }
    ).stages[0]
    assert _stage_rate(stage, 0) == pytest.approx(0.1)
    assert _stage_rate(stage, 1) == pytest.approx(0.05)  # half-way through the first cycle
    assert _stage_rate(stage, 1.99) < 0.001
    assert _stage_rate(stage, 2) == pytest.approx(0.02)  # epoch 3 (from 1): averaging
    assert _stage_rate(stage, 3.5) == pytest.approx(0.02)
    plain = StageSpec("s", epochs=4, learning_rate=0.1, swa=SwaSpec(start=3))
    assert _stage_rate(plain, 2.5) == pytest.approx(0.1)  # constant schedule, no SWA rate


def test_extra_member_names_and_their_provenance():
    recipe = Recipe.from_dict(
        {
            "name": "x",
            "source": "zoo tests",
            "backbone": "small_cnn",
            "stages": [
                {"name": "a", "epochs": 1, "learning_rate": 0.1},
                {
                    "name": "b",
                    "epochs": 6,
                    "learning_rate": 0.1,
                    "schedule": {"name": "cosine_restarts", "cycles": 3},
                    "snapshots": True,
                    "swa": {"start": 5},
                },
            ],
        }
    )
    assert extra_member_names(recipe, "run") == ["run.snap1", "run.snap2", "run.snap3", "run.swa"]
    plain = Recipe.from_dict({**recipe.as_dict(), "stages": recipe.as_dict()["stages"][:1]})
    assert extra_member_names(plain, "run") == []
    assert made_by({"snapshot": {"run": "a", "cycle": 1}}, "a")
    assert made_by({"swa": {"run": "a", "epochs": [3]}}, "a")
    assert not made_by({"swa": {"run": "b"}}, "a") and not made_by({"name": "a"}, "a")
