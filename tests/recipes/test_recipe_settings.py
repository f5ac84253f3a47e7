"""Typed recipes: whole-recipe checks at load, ``--set`` overrides, recipes read from a path,
and the ``member.json`` recipe shape (old members still load)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from zoo.cli.main import main
from zoo.data import images
from zoo.errors import ZooError
from zoo.recipes.recipe import Recipe, get_recipe, parse_recipe
from zoo.recipes.specs import AugmentSpec, OptimizerSpec
from zoo.training import trainer
from zoo.training.trainer import TrainOptions

TINY = """\
name = "tiny"
source = "zoo tests"
backbone = "small_cnn"
weights = "none"
batch_size = 32

[input]
size = 32
preprocessing = "unit"

[backbone_options]
widths = [8, 16]
convs_per_stage = 1

[augment]
rotation = 90
flip = "horizontal"

[[stages]]
name = "head"
epochs = 1
learning_rate = 0.01
trainable = "head"
augment = false

[[stages]]
name = "all"
epochs = 2
learning_rate = 0.003
"""

# config.recipe of a member.json written before recipes were typed (no color_constancy,
# batchnorm or lr_multipliers yet; the [augment] table as written in the file).
OLD_MEMBER_RECIPE = {
    "name": "small_cnn",
    "source": "zoo (this project): a small CNN trained from scratch",
    "backbone": "small_cnn",
    "input": {
        "size": 32,
        "preprocessing": "unit",
        "min_size": 32,
        "interpolation": "bilinear",
        "crop_borders": True,
    },
    "stages": [
        {
            "name": "train from scratch",
            "epochs": 2,
            "learning_rate": 0.003,
            "trainable": "all",
            "augment": True,
            "schedule": {"name": "one_cycle", "warmup": 0.3},
        }
    ],
    "description": "From-scratch CNN for 64–96 px on a CPU; no pretrained weights needed.",
    "backbone_options": {"widths": [32, 64, 128, 256], "convs_per_stage": 2},
    "weights": "none",
    "dropout": 0.3,
    "optimizer": {"name": "adamw", "weight_decay": 0.0001},
    "augment": {
        "rotation": "inscribed",
        "flip": "horizontal_and_vertical",
        "brightness": 0.1,
        "contrast": 0.1,
    },
    "class_weight": "effective",
    "class_weight_beta": 0.999,
    "sampling": "none",
    "label_smoothing": 0.05,
    "batch_size": 64,
    "early_stopping": 0,
    "path": "/somewhere/recipes/small_cnn.toml",
}


def write(folder: Path, text: str = TINY, name: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return path


# --- checked whole at load -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            ("rotation = 90", "rotaton = 90"),
            r"unknown key\(s\) \['rotaton'\].*Did you mean rotation\?",
        ),
        (("rotation = 90", "rotation = 270"), r"augment\.rotation must be .*\[0, 180\].*got 270"),
        (
            ('flip = "horizontal"', 'flip = "diagonal"'),
            r"augment\.flip must be one of .*got 'diagonal'",
        ),
        (
            ('flip = "horizontal"', "hue = 0.9"),
            r"augment\.hue must be a fraction in \[0, 0.5\] .*got 0.9",
        ),
        (
            ("rotation = 90", 'zoom = "0.1"'),
            r"augment\.zoom must be a number; got '0.1' \(string\)",
        ),
        (
            ('backbone = "small_cnn"', 'backbone = "InceptionV4"'),
            r"backbone: unknown backbone 'InceptionV4'\. Did you mean InceptionV3",
        ),
        (("batch_size = 32", "batch_size = 0"), r"batch_size must be from 1 to 4096 images; got 0"),
        (
            ("batch_size = 32", "dropuot = 0.2"),
            r"unknown key\(s\) \['dropuot'\].*Did you mean dropout",
        ),
        (
            ('trainable = "head"', 'trainable = "hed"'),
            r"stages\[1\]\.trainable must be one of .*Did you mean head\?",
        ),
    ],
)
def test_bad_recipe_fails_at_load_in_one_line_naming_file_key_and_value(tmp_path, change, pattern):
    path = write(tmp_path, TINY.replace(*change))
    with pytest.raises(ZooError, match=pattern) as info:
        parse_recipe(path)
    assert str(info.value).startswith(f"recipe file {path}: ")
    assert "\n" not in str(info.value)


def test_augment_typo_fails_before_any_image_is_decoded(
    tmp_path, zoo_workspace, capsys, monkeypatch
):
    """``zoo train FILE.toml`` with ``[augment] rotaton`` stops at load, not at stage start."""
    path = write(tmp_path, TINY.replace("rotation = 90", "rotaton = 90"))
    monkeypatch.setattr(images, "_MEMORY", {})
    code = main(["train", str(path), "--workspace", str(zoo_workspace)])
    err = capsys.readouterr().err
    assert code == 2 and "rotaton" in err and "Did you mean rotation" in err
    assert not (zoo_workspace / "cache" / "images").exists()


# --- --set ----------------------------------------------------------------------------------


def test_settings_override_any_field_as_toml_values():
    recipe = get_recipe("inception_v3").with_settings(
        [
            "input.size=96",
            "augment.rotation=90",
            "stages.1.epochs=2",
            "optimizer.name=sgd",
            "dropout=0.25",
            'description="short run"',
            'stages.1.schedule={ name = "cosine", warmup = 1 }',
        ]
    )
    assert recipe.input.size == 96 and recipe.stages[0].epochs == 2
    assert recipe.augment == AugmentSpec(rotation=90, flip="vertical")
    # rmsprop's rho and epsilon are not SGD arguments: dropped; momentum is kept
    assert recipe.optimizer == OptimizerSpec("sgd", {"momentum": 0.9})
    assert recipe.model.dropout == 0.25 and recipe.description == "short run"
    assert recipe.stages[0].schedule.as_dict() == {"name": "cosine", "warmup": 1}
    assert get_recipe("inception_v3").input.size == 299  # the registry's recipe unchanged


@pytest.mark.parametrize(
    ("setting", "pattern"),
    [
        (
            "augment.rotaton=90",
            r"^--set augment\.rotaton=90: .*unknown key.*Did you mean rotation\?",
        ),
        ("input.size=abc", r"^--set input\.size=abc: input\.size must be an integer; got 'abc'"),
        ("input.size=16", r"^--set input\.size=16: input\.size must be at least input\.min_size"),
        ("input.size=100000", r"input\.size must be from 1 to 1024 px; got 100000"),
        ("input.size=-5", r"input\.size must be from 1 to 1024 px; got -5"),
        ("input.min_size=0", r"input\.min_size must be from 1 to 1024 px; got 0"),
        ("batch_size=100000000000", r"batch_size must be from 1 to 4096 images; got 100000000000"),
        ("batch_size=0", r"batch_size must be from 1 to 4096 images; got 0"),
        (
            "stages.3.epochs=2",
            r"^--set stages\.3\.epochs=2: stages has no entry '3'; use a number from 1 to 2",
        ),
        (
            "stages.1.epochs=0",
            r"^--set stages\.1\.epochs=0: stages\[1\]\.epochs must be a positive integer; got 0",
        ),
        ("optimizer.name=adagrad", r"optimizer\.name must be one of .*got 'adagrad'"),
        ("backbone=InceptionV4", r"^--set backbone=InceptionV4: .*Did you mean InceptionV3"),
        ("inptu.size=96", r"unknown key\(s\) \['inptu'\].*Did you mean input\?"),
        ("input.size.px=3", r"input\.size is a value, not a table"),
        ("stages.1=3", r"set one key of stages\.1"),
        ("size", r"write KEY=VALUE"),
    ],
)
def test_bad_settings_name_the_setting_key_and_value(tmp_path, setting, pattern):
    recipe = parse_recipe(write(tmp_path))
    with pytest.raises(ZooError, match=pattern) as info:
        recipe.with_settings([setting])
    assert "\n" not in str(info.value)


def test_recipe_from_a_path_with_settings_reaches_the_run(tmp_path, zoo_workspace, monkeypatch):
    """``zoo train path/to/recipe.toml --set …``: the resolved run holds the file's recipe with
    the settings applied, and the options record them for member.json."""
    monkeypatch.setattr(images, "_MEMORY", {})
    path = write(tmp_path / "elsewhere")
    options = TrainOptions(
        recipe=str(path),
        workspace=zoo_workspace,
        epochs=2,
        settings=("augment.rotation=45", "stages.2.learning_rate=0.001"),
    )
    run = trainer._resolve(options)
    assert run.recipe.path == str(path) and run.name == "tiny.demo.s0"
    assert run.recipe.augment.rotation == 45 and run.recipe.stages[1].learning_rate == 0.001
    assert options.to_dict()["settings"] == (
        "augment.rotation=45",
        "stages.2.learning_rate=0.001",
    )
    missing = tmp_path / "nowhere" / "gone.toml"
    with pytest.raises(ZooError, match=f"cannot read recipe file {missing}"):
        get_recipe(str(missing))


def test_settings_win_over_the_demo_data_defaults(tmp_path, zoo_workspace, monkeypatch):
    """On demo data, --image-size and --epochs default to small values unless --set sets the
    input size or a stage's epochs."""
    monkeypatch.setattr(images, "_MEMORY", {})
    path = write(tmp_path)
    options = TrainOptions(
        recipe=str(path), workspace=zoo_workspace, settings=("input.size=40", "stages.2.epochs=3")
    )
    run = trainer._resolve(options)
    assert run.recipe.input.size == 40
    assert [s.epochs for s in run.recipe.stages] == [1, 3]
    assert run.pixels.pixels.shape[1:] == (40, 40, 3)


@pytest.mark.slow
def test_cli_train_from_a_file_with_set_records_the_settings(tmp_path, zoo_workspace, capsys):
    path = write(tmp_path)
    code = main(
        [
            "train",
            str(path),
            "--set",
            "augment.rotation=30",
            "--set",
            "stages.2.epochs=1",
            "--epochs",
            "2",
            "--workspace",
            str(zoo_workspace),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    info = json.loads((zoo_workspace / "members" / "tiny.demo.s0" / "member.json").read_text())
    assert info["config"]["options"]["settings"] == ["augment.rotation=30", "stages.2.epochs=1"]
    assert info["config"]["recipe"]["augment"]["rotation"] == 30
    assert info["config"]["recipe"]["path"] == str(path)
    assert Recipe.from_dict(info["config"]["recipe"]).augment.rotation == 30


# --- member.json shape ------------------------------------------------------------------------


def test_old_member_json_recipe_loads_and_round_trips():
    recipe = Recipe.from_dict(json.loads(json.dumps(OLD_MEMBER_RECIPE)))
    assert recipe.model.backbone == "small_cnn" and recipe.model.dropout == 0.3
    assert recipe.model.backbone_options == {"widths": [32, 64, 128, 256], "convs_per_stage": 2}
    assert recipe.optimizer == OptimizerSpec("adamw", {"weight_decay": 0.0001})
    assert recipe.augment.rotation == "inscribed" and recipe.augment.brightness == 0.1
    assert recipe.stages[0].batchnorm == "train" and recipe.input.color_constancy == "none"
    assert recipe.path == OLD_MEMBER_RECIPE["path"]
    again = recipe.as_dict()
    # the same keys as before, each holding what the old file held
    assert set(again) == set(OLD_MEMBER_RECIPE)
    for key in ("backbone", "weights", "dropout", "backbone_options", "optimizer", "name"):
        assert again[key] == OLD_MEMBER_RECIPE[key]
    assert again["stages"][0]["schedule"] == {"name": "one_cycle", "warmup": 0.3}
    assert Recipe.from_dict(json.loads(json.dumps(again))) == recipe


def test_damaged_member_recipe_is_a_one_line_error():
    with pytest.raises(ZooError, match=r"augment\.rotation must be") as info:
        Recipe.from_dict({**OLD_MEMBER_RECIPE, "augment": {"rotation": "spin"}})
    assert "\n" not in str(info.value)


def test_resume_refuses_other_settings_than_the_run_had(tmp_path):
    state = {"options": {"settings": ["input.size=40"]}, "weights": "none"}
    recipe = get_recipe("small_cnn")
    check = trainer._check_resume_options
    check(state, recipe, {"settings": ("input.size=40",)}, file=tmp_path / "state.json")
    with pytest.raises(ZooError, match=r"--resume: --set \('input.size=48',\) \(the run has"):
        check(state, recipe, {"settings": ("input.size=48",)}, file=tmp_path / "state.json")
