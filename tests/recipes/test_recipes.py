"""zoo.recipes.recipe: the registry, recipe files, overrides and the paper's settings."""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.recipes.recipe import (
    BUILTIN_RECIPES,
    Recipe,
    builtin_folder,
    get_recipe,
    load_registry,
    parse_recipe,
    recipe_dirs,
    scale_stages,
)
from zoo.recipes.specs import AugmentSpec, StageSpec

MINIMAL = """\
name = "{name}"
source = "a test"
backbone = "small_cnn"
weights = "none"

[input]
size = 32

[[stages]]
name = "all"
epochs = 2
learning_rate = 0.01
"""


def write_recipe(folder: Path, name: str, text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(text) if text is not None else MINIMAL.format(name=name))
    return path


def test_builtin_registry_has_every_recipe_file():
    registry = load_registry([BUILTIN_RECIPES])
    files = sorted(p.stem for p in BUILTIN_RECIPES.glob("*.toml"))
    assert registry.names() == files
    for name in ("inception_v3", "small_cnn", "efficientnet_b4", "nasnet_large"):
        assert name in registry.names()
    for recipe in registry:
        assert recipe.source and recipe.model.backbone and recipe.stages
        assert recipe.input.min_size <= recipe.input.size
        assert Path(recipe.path).is_file()


def test_builtin_folders_resolve_and_hold_the_shipped_files():
    """The registry's built-in location: the top-level folder in a checkout."""
    assert BUILTIN_RECIPES == builtin_folder("recipes") == recipe_dirs()[0]
    assert (BUILTIN_RECIPES / "inception_v3.toml").is_file()
    assert (builtin_folder("ensembles") / "steppan2020.toml").is_file()


def test_packaged_copy_is_preferred_when_installed(tmp_path, monkeypatch):
    """An installed wheel carries the folders as zoo/_builtin/<kind>/ (setup.py)."""
    import importlib.resources

    packaged = tmp_path / "zoo" / "_builtin" / "recipes"
    packaged.mkdir(parents=True)
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path / package)
    assert builtin_folder("recipes") == packaged
    assert builtin_folder("ensembles") == Path(__file__).resolve().parents[2] / "ensembles"


@pytest.mark.slow
def test_built_package_carries_recipes_and_ensembles(tmp_path):
    """setup.py's build step (what ``pip install .`` runs) copies the top-level folders into
    the package, and an import of that build finds its recipes there."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(root / name, source / name)
    for name in ("zoo", "recipes", "ensembles"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "docs").mkdir()
    shutil.copy(root / "docs" / "formats.md", source / "docs" / "formats.md")
    lib = tmp_path / "lib"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
        cwd=source,
        check=True,
        capture_output=True,
    )
    for kind in ("recipes", "ensembles"):
        shipped = sorted(p.name for p in (lib / "zoo" / "_builtin" / kind).glob("*.toml"))
        assert shipped and shipped == sorted(p.name for p in (root / kind).glob("*.toml"))
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from zoo.recipes.recipe import BUILTIN_RECIPES; print(BUILTIN_RECIPES)",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(lib)},
        check=True,
        capture_output=True,
        text=True,
    )
    assert found.stdout.strip() == str(lib / "zoo" / "_builtin" / "recipes")
    # the package data that code and help text read is installed with the package
    for data in ("scoring/taxonomy.toml", "publish/references.toml", "deploy/serve/page.html"):
        assert (lib / "zoo" / data).is_file(), data
    assert (lib / "zoo" / "_builtin" / "docs" / "formats.md").is_file()


def test_duplicate_name_is_an_error_naming_both_files(tmp_path):
    first = write_recipe(tmp_path / "a", "twin")
    second = write_recipe(tmp_path / "b", "twin")
    with pytest.raises(ZooError, match="defined twice") as info:
        load_registry([tmp_path / "a", tmp_path / "b"])
    assert str(first) in str(info.value) and str(second) in str(info.value)


def test_user_recipe_shadowing_a_builtin_is_an_error(tmp_path, monkeypatch):
    write_recipe(tmp_path, "other_file", MINIMAL.format(name="inception_v3"))
    monkeypatch.setenv("ZOO_RECIPE_PATH", str(tmp_path))
    with pytest.raises(ZooError, match="inception_v3.*defined twice"):
        get_recipe("small_cnn")


def test_unknown_name_lists_close_matches():
    with pytest.raises(ZooError, match="unknown recipe 'inception_v4'") as info:
        get_recipe("inception_v4")
    assert "Did you mean" in str(info.value) and "inception_v3" in str(info.value)
    with pytest.raises(ZooError, match="Known: .*small_cnn"):
        get_recipe("zzzzzz")


def test_user_recipe_from_zoo_recipe_path(tmp_path, monkeypatch):
    write_recipe(tmp_path / "mine", "my_cnn")
    other = tmp_path / "empty"
    other.mkdir()
    monkeypatch.setenv("ZOO_RECIPE_PATH", f"{other}{os.pathsep}{tmp_path / 'mine'}")
    assert tmp_path / "mine" in recipe_dirs()
    recipe = get_recipe("my_cnn")
    assert recipe.model.backbone == "small_cnn" and recipe.path == str(
        tmp_path / "mine" / "my_cnn.toml"
    )
    assert get_recipe("small_cnn").name == "small_cnn"  # built-ins still there


def test_workspace_recipes_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_RECIPE_PATH", raising=False)
    write_recipe(tmp_path / "recipes", "ws_cnn")
    assert get_recipe("ws_cnn", workspace=tmp_path).name == "ws_cnn"
    with pytest.raises(ZooError):
        get_recipe("ws_cnn")


def test_name_defaults_to_file_stem(tmp_path):
    path = write_recipe(tmp_path, "stem_name", MINIMAL.replace('name = "{name}"\n', ""))
    assert parse_recipe(path).name == "stem_name"


BAD_RECIPES = {
    "unknown key": ('colour = "blue"\n' + MINIMAL, r"unknown key.*colour"),
    "bad preprocessing": (
        MINIMAL.replace("size = 32", 'size = 32\npreprocessing = "imagenet"'),
        r"input.preprocessing must be one of .*'imagenet'",
    ),
    "unknown input key": (
        MINIMAL.replace("size = 32", "size = 32\nresolution = 7"),
        r"bad \[input\] table",
    ),
    "missing stages": (MINIMAL.split("[[stages]]")[0], r"missing required key 'stages'"),
    "empty stages": ("stages = []\n" + MINIMAL.split("[[stages]]")[0], r"at least one"),
    "missing backbone": (MINIMAL.replace('backbone = "small_cnn"\n', ""), r"'backbone'"),
    "bad trainable": (MINIMAL + 'trainable = "some"\n', r"trainable must be one of"),
    "bad schedule": (MINIMAL + 'schedule = { name = "linear" }\n', r"schedule.name must be"),
    "bad stage key": (MINIMAL + "momentum = 0.9\n", r"bad \[\[stages\]\] entry 1"),
    "bad class weight": (
        MINIMAL.replace('weights = "none"', 'weights = "none"\nclass_weight = "sqrt"'),
        r"class_weight must be one of",
    ),
    "balanced and weights": (
        MINIMAL.replace(
            'weights = "none"', 'weights = "none"\nclass_weight = "inverse"\nsampling = "balanced"'
        ),
        r"not both",
    ),
    "not toml": ("name = = 3\n", r"not valid TOML"),
    "quoted epochs": (
        MINIMAL.replace("epochs = 2", 'epochs = "5"'),
        r"stages\[1\]\.epochs must be an integer; got '5' \(string\)\. Write it without quotes: epochs = 5",
    ),
    "quoted learning rate": (
        MINIMAL.replace("learning_rate = 0.01", 'learning_rate = "0.01"'),
        r"stages\[1\]\.learning_rate must be a number; got '0.01'",
    ),
    "quoted batch size": ('batch_size = "32"\n' + MINIMAL, r"batch_size must be an integer"),
    "float epochs": (MINIMAL.replace("epochs = 2", "epochs = 2.5"), r"must be an integer; got 2.5"),
    "quoted boolean": (MINIMAL + 'augment = "false"\n', r"augment must be true or false"),
    "quoted input size": (
        MINIMAL.replace("size = 32", 'size = "32"'),
        r"input\.size must be an integer; got '32'",
    ),
    "input not a table": (
        MINIMAL.replace("[input]\nsize = 32", 'input = "32"'),
        r"input must be a table",
    ),
    "size below min_size": (
        MINIMAL.replace("size = 32", "size = 16"),
        r"input\.size must be at least",
    ),
    "bad interpolation": (
        MINIMAL.replace("size = 32", 'size = 32\ninterpolation = "cubic"'),
        r"input\.interpolation must be one of .*'bicubic'.*got 'cubic'",
    ),
    "stages not an array": (
        MINIMAL.replace("[[stages]]", "[stages]"),
        r"stages must be an array of tables",
    ),
    "zero epochs": (MINIMAL.replace("epochs = 2", "epochs = 0"), r"epochs must be a positive"),
    "negative learning rate": (
        MINIMAL.replace("learning_rate = 0.01", "learning_rate = -0.01"),
        r"learning_rate must be > 0",
    ),
    "dropout out of range": ("dropout = 1.5\n" + MINIMAL, r"dropout must be in \[0, 1\); got 1.5"),
    "schedule option of another schedule": (
        MINIMAL + 'schedule = { name = "step", warmup = 3 }\n',
        r"stages\[1\]\.schedule: schedule 'step' takes \['every', 'factor'\]; got \['warmup'\]",
    ),
    "quoted schedule option": (
        MINIMAL + 'schedule = { name = "step", every = "30" }\n',
        r"schedule 'step' option 'every' must be a number; got '30'",
    ),
    "zero step period": (
        MINIMAL + 'schedule = { name = "step", every = 0 }\n',
        r"option 'every' must be > 0; got 0",
    ),
    "one-cycle warm-up beyond the stage": (
        MINIMAL + 'schedule = { name = "one_cycle", warmup = 3 }\n',
        r"option 'warmup' must be between 0 and 1",
    ),
    "unknown optimizer": (
        MINIMAL + '[optimizer]\nname = "adagrad"\n',
        r"optimizer\.name must be one of adam, adamw, sgd, rmsprop, nadam; got 'adagrad'",
    ),
    "argument of another optimizer": (
        MINIMAL + '[optimizer]\nname = "adam"\nmomentum = 0.9\n',
        r"optimizer\.momentum is not an argument of keras\.optimizers\.Adam .*allowed: .*beta_1",
    ),
    "misspelt optimizer argument": (
        MINIMAL + '[optimizer]\nname = "adam"\nbeta1 = 0.9\n',
        r"optimizer\.beta1 .*Did you mean beta_1",
    ),
    "quoted optimizer argument": (
        MINIMAL + '[optimizer]\nname = "rmsprop"\nrho = "0.9"\n',
        r"optimizer\.rho must be a number .*got '0.9' \(string\)",
    ),
    "optimizer boolean": (
        MINIMAL + '[optimizer]\nname = "sgd"\nnesterov = 1\n',
        r"optimizer\.nesterov must be true or false",
    ),
    "optimizer learning rate": (
        MINIMAL + '[optimizer]\nname = "sgd"\nlearning_rate = 0.1\n',
        r"set learning_rate in each \[\[stages\]\] entry",
    ),
    "two kinds of clipping": (
        MINIMAL + '[optimizer]\nname = "adam"\nclipnorm = 1.0\nclipvalue = 0.5\n',
        r"at most one of clipnorm, clipvalue, global_clipnorm",
    ),
    "optimizer not a table": ('optimizer = "adam"\n' + MINIMAL, r"optimizer must be a table"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipe_file_is_an_error_naming_the_file(tmp_path, case):
    text, pattern = BAD_RECIPES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text.replace("{name}", "bad"))
    with pytest.raises(ZooError, match=pattern) as info:
        parse_recipe(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_types_name_file_key_value_and_expected_type(tmp_path):
    """``epochs = "5"`` fails when the recipe is loaded, not in the middle of a run."""
    path = write_recipe(
        tmp_path, "quoted", MINIMAL.format(name="quoted").replace("epochs = 2", 'epochs = "5"')
    )
    with pytest.raises(ZooError) as info:
        load_registry([tmp_path])
    message = str(info.value)
    assert message.startswith(f"recipe file {path}: ")
    assert "epochs" in message and "'5'" in message and "an integer" in message


def test_integers_are_accepted_where_numbers_are_expected(tmp_path):
    text = MINIMAL.replace("learning_rate = 0.01", "learning_rate = 1") + "[optimizer]\n"
    text += 'name = "sgd"\nmomentum = 0\nnesterov = true\n'
    recipe = parse_recipe(write_recipe(tmp_path, "ints", text.format(name="ints")))
    assert recipe.stages[0].learning_rate == 1.0 and isinstance(
        recipe.stages[0].learning_rate, float
    )
    assert recipe.optimizer.as_dict() == {"name": "sgd", "momentum": 0, "nesterov": True}


def test_non_utf8_recipe_is_a_one_line_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "naevus, café-au-lait"\n'.encode("latin-1") + MINIMAL.encode())
    with pytest.raises(ZooError, match="not UTF-8") as info:
        load_registry([tmp_path])
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.format(name="bom").encode())
    assert parse_recipe(path).name == "bom"


def test_optimizer_names_match_the_trainer():
    """specs.OPTIMIZERS (checked at load) and trainer.OPTIMIZERS (built) are the same classes."""
    import keras

    from zoo.recipes.specs import OPTIMIZERS, optimizer_arguments
    from zoo.training.finetune import OPTIMIZERS as BUILT

    assert {n: getattr(keras.optimizers, c) for n, c in OPTIMIZERS.items()} == BUILT
    rmsprop = optimizer_arguments("rmsprop")
    assert {"rho", "momentum", "epsilon", "weight_decay"} <= set(rmsprop)
    assert "learning_rate" not in rmsprop and "name" not in rmsprop


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop", "nadam"])
def test_written_out_optimizer_arguments_match_keras(name):
    """The table that lets recipes load without Keras is what Keras' signatures say."""
    import inspect

    import keras

    from zoo.recipes.specs import OPTIMIZERS, optimizer_arguments

    init = getattr(keras.optimizers, OPTIMIZERS[name]).__init__
    keras_arguments = {
        p.name: p.default
        for p in inspect.signature(init).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in ("self", "learning_rate", "name")
    }
    assert optimizer_arguments(name) == keras_arguments


def test_loading_recipes_does_not_import_keras():
    import subprocess
    import sys

    code = (
        "import sys; from zoo.recipes.recipe import load_registry; load_registry(); "
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _stages(*epochs: int) -> tuple[StageSpec, ...]:
    return tuple(StageSpec(name=f"s{i}", epochs=e, learning_rate=0.1) for i, e in enumerate(epochs))


@pytest.mark.parametrize(
    ("own", "total", "expected"),
    [
        ((2, 20), 22, (2, 20)),
        ((2, 20), 6, (1, 5)),
        ((2, 20), 44, (4, 40)),
        ((2, 20), 2, (1, 1)),
        ((90,), 3, (3,)),
        ((1, 1, 1), 9, (3, 3, 3)),
        ((10, 1), 4, (3, 1)),
    ],
)
def test_scale_stages_examples(own, total, expected):
    assert tuple(s.epochs for s in scale_stages(_stages(*own), total)) == expected


def test_scale_stages_fewer_epochs_than_stages_keeps_the_last():
    scaled = scale_stages(_stages(2, 3, 20), 1)
    assert [(s.name, s.epochs) for s in scaled] == [("s2", 1)]
    scaled = scale_stages(_stages(2, 3, 20), 2)
    assert [(s.name, s.epochs) for s in scaled] == [("s1", 1), ("s2", 1)]


@pytest.mark.parametrize("own", [(2, 20), (1, 1, 30), (5,), (30, 1), (3, 3, 3, 1)])
def test_scale_stages_always_sums_to_the_budget(own):
    for total in range(1, 60):
        scaled = scale_stages(_stages(*own), total)
        assert sum(s.epochs for s in scaled) == total
        assert all(s.epochs >= 1 for s in scaled)
        assert len(scaled) == min(len(own), total)


def test_scale_stages_rejects_nonpositive_budget():
    with pytest.raises(ZooError, match="--epochs must be a positive integer; got 0"):
        scale_stages(_stages(1), 0)


def test_with_overrides():
    recipe = get_recipe("inception_v3")
    small = recipe.with_overrides(image_size=75, epochs=3, batch_size=4, weights="none")
    assert (small.input.size, small.epochs, small.batch_size) == (75, 3, 4)
    assert small.model.weights == "none"
    assert small.input.preprocessing == recipe.input.preprocessing
    assert recipe.input.size == 299 and recipe.epochs == 90  # frozen original untouched
    with pytest.raises(ZooError, match="--image-size 64 is too small for inception_v3.*75"):
        recipe.with_overrides(image_size=64)
    with pytest.raises(ZooError, match="--batch-size"):
        recipe.with_overrides(batch_size=0)


def test_to_dict_round_trip_through_json():
    """member.json and a resumed run's state.json store the resolved recipe as JSON."""
    for recipe in load_registry([BUILTIN_RECIPES]):
        assert Recipe.from_dict(json.loads(json.dumps(recipe.as_dict()))) == recipe
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_recipe("small_cnn").name = "x"  # type: ignore[misc]


def test_inception_v3_carries_esteva_settings():
    """Esteva et al. 2017, Nature 542:115: the methods paragraph, field by field."""
    r = get_recipe("inception_v3")
    assert r.model.backbone == "InceptionV3" and r.model.weights == "imagenet"
    assert "Esteva" in r.source
    assert r.input.size == 299 and r.input.preprocessing == "inception"
    assert r.optimizer.as_dict() == {"name": "rmsprop", "rho": 0.9, "momentum": 0.9, "epsilon": 0.1}
    assert len(r.stages) == 1
    stage = r.stages[0]
    assert stage.trainable == "all" and stage.augment
    assert stage.learning_rate == 0.001
    assert stage.schedule.as_dict() == {"name": "step", "every": 30, "factor": 1 / 16}
    assert (r.augment.rotation, r.augment.flip) == ("inscribed", "vertical")
    assert r.augment == AugmentSpec(rotation="inscribed", flip="vertical")
    assert r.class_weight == "none" and r.sampling == "none" and r.model.dropout == 0.0
    assert r.label_smoothing == 0.0


def test_inception_v3_optimizer_is_keras_rmsprop_with_those_settings():
    from zoo.training.finetune import make_optimizer

    r = get_recipe("inception_v3")
    opt = make_optimizer(r.optimizer, r.stages[0].learning_rate)
    assert type(opt).__name__ == "RMSprop"
    assert (opt.rho, opt.momentum, opt.epsilon) == (0.9, 0.9, 0.1)
    assert float(opt.learning_rate) == pytest.approx(0.001)


def test_every_recipe_schedule_and_optimizer_are_valid():
    from zoo.recipes.schedules import learning_rate
    from zoo.training.finetune import make_optimizer

    for recipe in load_registry([BUILTIN_RECIPES]):
        make_optimizer(recipe.optimizer, 0.001)
        for stage in recipe.stages:
            for epoch in (0, stage.epochs / 2, stage.epochs):
                lr = learning_rate(
                    stage.schedule, base=stage.learning_rate, epoch=epoch, epochs=stage.epochs
                )
                assert 0 <= lr <= stage.learning_rate * (1 + 1e-9)
