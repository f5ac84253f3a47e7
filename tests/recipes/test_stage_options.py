"""The stage options for cheap extra members and progressive resizing: ``snapshots`` (with the
``cosine_restarts`` schedule), ``swa`` and ``image_size``, checked at load and after overrides,
and left out of the resolved recipe when off."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.recipes.recipe import Recipe, get_recipe, parse_recipe, scale_stages
from zoo.recipes.specs import StageSpec, SwaSpec

RECIPE = """\
name = "cheap"
source = "zoo tests"
backbone = "small_cnn"
weights = "none"

[input]
size = 48
min_size = 32
preprocessing = "unit"

[[stages]]
name = "small images"
epochs = 2
learning_rate = 0.003
image_size = 32

[[stages]]
name = "cycles"
epochs = 6
learning_rate = 0.01
schedule = { name = "cosine_restarts", cycles = 3 }
snapshots = true
swa = { start = 5 }
"""


def write(folder: Path, text: str = RECIPE) -> Path:
    path = folder / "cheap.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_options_load_typed_and_name_the_extra_members(tmp_path):
    recipe = parse_recipe(write(tmp_path))
    small, cycles = recipe.stages
    assert small.image_size == 32 and not small.snapshots and small.swa is None
    assert cycles.image_size is None and cycles.snapshots is True
    assert cycles.swa == SwaSpec(start=5, learning_rate=0.0)
    assert cycles.schedule.name == "cosine_restarts" and cycles.schedule.cycles == 3


def test_the_resolved_recipe_shows_options_that_are_on_and_round_trips(tmp_path):
    recipe = parse_recipe(write(tmp_path))
    stages = recipe.as_dict()["stages"]
    assert stages[0]["image_size"] == 32
    assert "snapshots" not in stages[0] and "swa" not in stages[0]
    assert stages[1]["snapshots"] is True
    assert stages[1]["swa"] == {"start": 5, "learning_rate": 0.0}
    assert stages[1]["schedule"] == {"name": "cosine_restarts", "cycles": 3}
    assert "image_size" not in stages[1]
    assert Recipe.from_dict(json.loads(json.dumps(recipe.as_dict()))) == recipe


def test_recipes_without_the_options_resolve_as_before():
    """Off, the options leave the stage dict exactly as it was before they existed."""
    before = {"name", "epochs", "learning_rate", "trainable", "augment", "schedule"}
    before |= {"lr_multipliers", "batchnorm"}
    for name in ("small_cnn", "inception_v3", "efficientnet_b0"):
        for stage in get_recipe(name).as_dict()["stages"]:
            assert set(stage) == before, name
    stage = get_recipe("small_cnn").stages[0]
    assert (stage.snapshots, stage.swa, stage.image_size) == (False, None, None)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            ("snapshots = true", "snapshot = true"),
            r"stages\]\] entry 2 table: unknown key\(s\) \['snapshot'\].*Did you mean snapshots\?",
        ),
        (
            (
                'schedule = { name = "cosine_restarts", cycles = 3 }',
                'schedule = { name = "cosine" }',
            ),
            r'stages\[2\]\.snapshots = true needs schedule = \{ name = "cosine_restarts", '
            r"cycles = M \}; got schedule 'cosine'\.",
        ),
        (
            ("cycles = 3", "cycles = 7"),
            r"stages\[2\]\.schedule cycles must be at most the stage's epochs \(6\); got 7\.",
        ),
        (
            ("cycles = 3", "cycles = 2.5"),
            r"option 'cycles' must be a positive integer \(the number of cycles\); got 2\.5\.",
        ),
        (("cycles = 3", "cycles = 0"), r"option 'cycles' must be a positive integer.*got 0\."),
        (
            ('name = "cosine_restarts", cycles = 3', 'name = "cosine_restarts"'),
            r"schedule 'cosine_restarts' needs cycles.*got none\.",
        ),
        (
            ("snapshots = true", 'snapshots = "yes"'),
            r"stages\[2\]\.snapshots must be true or false",
        ),
        (
            ("swa = { start = 5 }", "swa = { start = 7 }"),
            r"stages\[2\]\.swa\.start must be an epoch of the stage \(1 to 6\); got 7\.",
        ),
        (
            ("swa = { start = 5 }", "swa = { start = 0 }"),
            r"stages\[2\]\.swa\.start must be an epoch of the stage, counted from 1; got 0\.",
        ),
        (
            ("swa = { start = 5 }", "swa = {}"),
            r"bad \[stages\[2\]\.swa\] table: missing required key 'start'",
        ),
        (
            ("swa = { start = 5 }", "swa = { start = 5, begin = 2 }"),
            r"bad \[stages\[2\]\.swa\] table: unknown key\(s\) \['begin'\]; "
            r"allowed: \['learning_rate', 'start'\]",
        ),
        (
            ("swa = { start = 5 }", "swa = { start = 5, learning_rate = -0.1 }"),
            r"stages\[2\]\.swa\.learning_rate must be 0 \(the stage's schedule\) or > 0; got -0\.1",
        ),
        (
            ("swa = { start = 5 }", "swa = 5"),
            r"stages\[2\]\.swa must be a table; got 5 \(integer\)",
        ),
        (
            ("image_size = 32", "image_size = 24"),
            r"stages\[1\]\.image_size must be from input\.min_size to input\.size "
            r"\(32 to 48 px\); got 24\.",
        ),
        (
            ("image_size = 32", "image_size = 64"),
            r"stages\[1\]\.image_size must be .*\(32 to 48 px\); got 64\.",
        ),
        (
            ("image_size = 32", 'image_size = "32"'),
            r"stages\[1\]\.image_size must be an integer; got '32' \(string\)\. "
            r"Write it without quotes: image_size = 32\.",
        ),
        (
            ("image_size = 32", "image_size = 32\nswa = { start = 1 }"),
            r"swa may be set in one stage only \(its members are named once\); got stages 1, 2\.",
        ),
    ],
)
def test_bad_options_fail_at_load_in_one_line(tmp_path, change, pattern):
    assert change[0] in RECIPE
    path = write(tmp_path, RECIPE.replace(*change))
    with pytest.raises(ZooError, match=pattern) as info:
        parse_recipe(path)
    assert str(info.value).startswith(f"recipe file {path}: ")
    assert "\n" not in str(info.value)


def test_two_stages_with_snapshots_are_refused(tmp_path):
    twice = RECIPE.replace(
        "image_size = 32",
        'schedule = { name = "cosine_restarts", cycles = 2 }\nsnapshots = true',
    )
    with pytest.raises(ZooError, match=r"snapshots may be set in one stage only.*got stages 1, 2"):
        parse_recipe(write(tmp_path, twice))


def test_settings_are_checked_like_the_file(tmp_path):
    recipe = parse_recipe(write(tmp_path))
    assert recipe.with_settings(["stages.2.swa.start=3"]).stages[1].swa.start == 3
    assert recipe.with_settings(["stages.1.image_size=40"]).stages[0].image_size == 40
    with pytest.raises(ZooError, match=r"^--set stages\.2\.schedule\.cycles=9: stages\[2\]\."):
        recipe.with_settings(["stages.2.schedule.cycles=9"])
    with pytest.raises(
        ZooError, match=r"^--set stages\.1\.snapshots=true: .*got schedule 'constant'"
    ):
        recipe.with_settings(["stages.1.snapshots=true"])


def test_overrides_are_checked_and_epochs_rescale_the_average(tmp_path):
    recipe = parse_recipe(write(tmp_path))
    longer = recipe.with_overrides(epochs=16)  # stages 2 + 6 → 4 + 12
    assert [s.epochs for s in longer.stages] == [4, 12]
    assert longer.stages[1].swa.start == 9  # the last third of the stage still averaged
    assert longer.stages[1].schedule.cycles == 3
    with pytest.raises(  # 3 epochs: 1 + 2, fewer than the 3 cycles
        ZooError,
        match=r"^--epochs 3: stages\[2\]\.schedule cycles must be at most the stage's "
        r"epochs \(2\); got 3\.$",
    ):
        recipe.with_overrides(epochs=3)
    assert recipe.with_overrides(image_size=32).stages[0].image_size == 32


def test_image_size_override_below_a_stage_size_is_an_error(tmp_path):
    recipe = parse_recipe(write(tmp_path, RECIPE.replace("image_size = 32", "image_size = 40")))
    with pytest.raises(
        ZooError,
        match=r"^--image-size 36: stages\[1\]\.image_size must be from input\.min_size to "
        r"input\.size \(32 to 36 px\); got 40\.$",
    ):
        recipe.with_overrides(image_size=36)


@pytest.mark.parametrize(
    ("epochs", "start", "new_epochs", "new_start"),
    [(6, 5, 12, 9), (6, 5, 3, 3), (6, 6, 60, 51), (6, 1, 3, 1), (4, 3, 1, 1), (6, 5, 6, 5)],
)
def test_scaling_a_stage_keeps_its_averaged_share(epochs, start, new_epochs, new_start):
    stage = StageSpec("s", epochs=epochs, learning_rate=0.1, swa=SwaSpec(start=start))
    (scaled,) = scale_stages((stage,), new_epochs)
    assert scaled.epochs == new_epochs and scaled.swa.start == new_start
