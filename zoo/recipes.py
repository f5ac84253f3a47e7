"""Recipes: declarative training settings (TOML files) and the registry that finds them.

A recipe reads like a paper's methods paragraph: backbone, input, optimizer, schedule,
augmentation, stages and class weighting. The heavy builders live once in ``zoo.models``
and ``zoo.training``; a recipe only holds data.

Recipes are found in the built-in ``recipes/`` folder (:func:`builtin_folder`), in
``<workspace>/recipes/`` and in every folder of ``$ZOO_RECIPE_PATH`` (``os.pathsep``-separated),
so users add their own without editing the package. A name defined twice is an error.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import os
import tomllib
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.backbones import check_preprocessing, get_backbone
from zoo.errors import ZooError, close_matches
from zoo.names import NAME_RULE, is_valid_name
from zoo.training.schedules import learning_rate


def builtin_folder(kind: str) -> Path:
    """The built-in ``recipes`` or ``ensembles`` folder.

    The top-level folders of the repository are the source of truth; a wheel carries copies
    as ``zoo/_builtin/<kind>/`` (see ``setup.py``). An installed package reads those, an
    editable checkout the top-level folder.
    """
    packaged = Path(str(importlib.resources.files("zoo"))) / "_builtin" / kind
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / kind


BUILTIN_RECIPES = builtin_folder("recipes")
CLASS_WEIGHTS = ("none", "inverse", "effective")
SAMPLING = ("none", "balanced")
TRAINABLE = ("all", "head")
BATCHNORM = ("train", "frozen")
COLOR_CONSTANCY = ("none", "shades_of_gray")


@dataclass(frozen=True)
class InputSpec:
    """How images enter the network: read by the data pipeline, TTA and export alike."""

    size: int
    preprocessing: str = "inception"
    min_size: int = 32
    interpolation: str = "bilinear"
    crop_borders: bool = False
    # "shades_of_gray": colour constancy (Minkowski p = 6) inside the model, before the
    # backbone's normalisation; "none": pixels as decoded.
    color_constancy: str = "none"


@dataclass(frozen=True)
class Stage:
    """One phase of training: which layers learn, for how long, at what learning rate."""

    name: str
    epochs: int
    learning_rate: float
    trainable: str = "all"
    augment: bool = True
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "constant"})
    # Discriminative learning rates: the backbone cut into len(...) groups of layers, early to
    # late, each learning at learning_rate × its multiplier (0 freezes the group); the head
    # learns at learning_rate. Empty: every layer at learning_rate.
    lr_multipliers: tuple[float, ...] = ()
    # "frozen": batch-norm layers of the backbone keep their (ImageNet) statistics and scales,
    # as in Keras' transfer-learning guide; "train": they learn like the other layers.
    batchnorm: str = "train"


@dataclass(frozen=True)
class Recipe:
    """A registered training recipe (see ``recipes/*.toml``)."""

    name: str
    source: str
    backbone: str
    input: InputSpec
    stages: tuple[Stage, ...]
    description: str = ""
    backbone_options: dict[str, Any] = field(default_factory=dict)
    weights: str = "imagenet"
    dropout: float = 0.0
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "adam"})
    augment: dict[str, Any] = field(default_factory=dict)
    class_weight: str = "none"
    class_weight_beta: float = 0.999
    sampling: str = "none"
    label_smoothing: float = 0.0
    batch_size: int = 32
    early_stopping: int = 0
    path: str = ""

    @property
    def epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe as plain data (for member.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["input"] = InputSpec(**data["input"])
        data["stages"] = tuple(
            Stage(**{**s, "lr_multipliers": tuple(s.get("lr_multipliers", ()))})
            for s in data["stages"]
        )
        return cls(**data)

    def with_overrides(
        self,
        *,
        image_size: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        weights: str | None = None,
        crop_borders: bool | None = None,
    ) -> Recipe:
        """A copy with command-line overrides applied (``--epochs`` is the total budget)."""
        recipe = self
        if image_size is not None:
            if image_size < self.input.min_size:
                raise ZooError(
                    f"--image-size {image_size} is too small for {self.name} "
                    f"(backbone {self.backbone} needs at least {self.input.min_size} px)."
                )
            recipe = dataclasses.replace(
                recipe, input=dataclasses.replace(recipe.input, size=image_size)
            )
        if epochs is not None:
            recipe = dataclasses.replace(recipe, stages=scale_stages(recipe.stages, epochs))
        if batch_size is not None:
            if batch_size < 1:
                raise ZooError(f"--batch-size must be a positive integer; got {batch_size}.")
            recipe = dataclasses.replace(recipe, batch_size=batch_size)
        if weights is not None:
            recipe = dataclasses.replace(recipe, weights=weights)
        if crop_borders is not None:
            recipe = dataclasses.replace(
                recipe, input=dataclasses.replace(recipe.input, crop_borders=crop_borders)
            )
        return recipe


def scale_stages(stages: tuple[Stage, ...], total: int) -> tuple[Stage, ...]:
    """Share a total epoch budget among stages in proportion to their own lengths.

    Every stage keeps at least one epoch while the budget allows; with fewer epochs than
    stages, the last stages run (fine-tuning matters more than warming up the head).
    """
    if total < 1:
        raise ZooError(f"--epochs must be a positive integer; got {total}.")
    if total < len(stages):
        return tuple(dataclasses.replace(s, epochs=1) for s in stages[-total:])
    own = sum(s.epochs for s in stages)
    counts = [max(1, round(total * s.epochs / own)) for s in stages]
    counts[-1] += total - sum(counts)
    while counts[-1] < 1:  # rounding gave earlier stages too much
        i = max(range(len(counts) - 1), key=lambda k: counts[k])
        counts[i] -= 1
        counts[-1] += 1
    return tuple(dataclasses.replace(s, epochs=n) for s, n in zip(stages, counts, strict=True))


_TOP_KEYS = {f.name for f in dataclasses.fields(Recipe)} - {"path", "input", "stages"}
_TOML_TYPES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "a table",
}
# ``[optimizer] name`` → the class in ``keras.optimizers`` (zoo.training.trainer builds it).
OPTIMIZERS = {
    "adam": "Adam",
    "adamw": "AdamW",
    "sgd": "SGD",
    "rmsprop": "RMSprop",
    "nadam": "Nadam",
}
_CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")


def _toml_type(value: Any) -> str:
    kinds = {bool: "boolean", str: "string", int: "integer", float: "float", list: "array"}
    return kinds.get(type(value), "table" if isinstance(value, dict) else type(value).__name__)


def _how_to_fix(kind: type, key: str, value: Any) -> str:
    """'Write it without quotes: epochs = 5.' when a number or boolean came quoted."""
    if isinstance(value, str):
        text = value.strip()
        if kind is bool and text.lower() in ("true", "false"):
            return f"Write it without quotes: {key} = {text.lower()}."
        if kind in (int, float):
            try:
                kind(text)
            except ValueError:
                pass
            else:
                return f"Write it without quotes: {key} = {text}."
    return f"Change it to {_TOML_TYPES[kind]}."


def _checked(cls: type, raw: dict[str, Any], *, prefix: str, fail) -> dict[str, Any]:
    """``raw`` with every value checked against the type of ``cls``'s field of that name.

    A float field accepts an integer (``learning_rate = 1``) and stores it as a float; nested
    records (``[input]``, ``[[stages]]``) are checked on their own.
    """
    hints = typing.get_type_hints(cls)
    checked = dict(raw)
    for key, value in raw.items():
        kind = typing.get_origin(hints.get(key)) or hints.get(key)
        if kind not in _TOML_TYPES:
            continue
        if kind is float and type(value) is int:
            checked[key] = float(value)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise fail(
                f"{prefix}{key} must be {_TOML_TYPES[kind]}; got {value!r} ({_toml_type(value)}). "
                + _how_to_fix(kind, key, value)
            )
    return checked


def _record(cls: type, raw: Any, *, table: str, prefix: str, fail) -> Any:
    """``cls(**raw)`` once ``raw`` is a table with known keys, the required ones and right types."""
    if not isinstance(raw, dict):
        raise fail(f"{table} must be a table; got {raw!r} ({_toml_type(raw)}).")
    fields = dataclasses.fields(cls)
    allowed = sorted(f.name for f in fields)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise fail(f"bad {table} table: unknown key(s) {unknown}; allowed: {allowed}.")
    missing = [
        f.name
        for f in fields
        if f.name not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise fail(f"bad {table} table: missing required key(s) {missing}; add them.")
    return cls(**_checked(cls, raw, prefix=prefix, fail=fail))


# The keyword arguments (→ defaults) of each Keras optimizer that ``[optimizer] name`` picks,
# less ``learning_rate`` (set per stage) and ``name``. Written out so that loading recipes never
# imports Keras (``zoo recipes`` answers in a second); a test checks it against Keras' signatures.
_COMMON_ARGUMENTS = {
    "weight_decay": None,
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}
_ADAM = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07}
OPTIMIZER_ARGUMENTS = {
    "adam": {**_ADAM, "amsgrad": False, **_COMMON_ARGUMENTS},
    "adamw": {**_COMMON_ARGUMENTS, "weight_decay": 0.004, **_ADAM, "amsgrad": False},
    "sgd": {"momentum": 0.0, "nesterov": False, **_COMMON_ARGUMENTS},
    "rmsprop": {
        "rho": 0.9,
        "momentum": 0.0,
        "epsilon": 1e-07,
        "centered": False,
        **_COMMON_ARGUMENTS,
    },
    "nadam": {**_ADAM, **_COMMON_ARGUMENTS},
}


def optimizer_arguments(name: str) -> dict[str, Any]:
    """The keyword arguments (→ defaults) of the Keras optimizer that ``[optimizer] name`` picks."""
    return dict(OPTIMIZER_ARGUMENTS[name])


def _check_optimizer(config: dict[str, Any], fail) -> None:
    """``[optimizer]``: a known name and only arguments its Keras class accepts, of the right type."""
    name = config.get("name", "adam")
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise fail(f"optimizer.name must be one of {', '.join(OPTIMIZERS)}; got {name!r}.")
    accepted = optimizer_arguments(name)
    keras_name = f"keras.optimizers.{OPTIMIZERS[name]}"
    for key, value in config.items():
        if key == "name":
            continue
        if key == "learning_rate":
            raise fail(
                "optimizer.learning_rate is not used: set learning_rate in each [[stages]] entry."
            )
        if key not in accepted:
            near = close_matches(key, list(accepted))
            raise fail(
                f"optimizer.{key} is not an argument of {keras_name} (optimizer {name!r}); "
                f"allowed: {', '.join(sorted(accepted))}.{near if 'Did you mean' in near else ''}"
            )
        default = accepted[key]
        if isinstance(default, bool):
            kind = bool
        elif default is None or isinstance(default, int | float):
            kind = float
        else:
            continue
        if not isinstance(value, kind) and not (kind is float and type(value) is int):
            raise fail(
                f"optimizer.{key} must be {_TOML_TYPES[kind]} ({keras_name}); got {value!r} "
                f"({_toml_type(value)}). " + _how_to_fix(kind, key, value)
            )
    clipping = [k for k in _CLIPPING if k in config]
    if len(clipping) > 1:
        raise fail(
            f"optimizer: set at most one of {', '.join(_CLIPPING)}; got {', '.join(clipping)}."
        )


def _read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; unreadable, non-UTF-8 or invalid TOML is a one-line ZooError."""
    try:
        text = path.read_bytes().decode("utf-8-sig")  # tolerate a byte-order mark
        return tomllib.loads(text)
    except OSError as exc:
        raise ZooError(f"cannot read recipe file {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError as exc:
        raise ZooError(
            f"recipe file {path} is not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r}); "
            "save it with UTF-8 encoding."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ZooError(
            f"recipe file {path} is not valid TOML: {reason}. Fix the syntax (recipes/*.toml are examples)."
        ) from None


def _check_finite(value: Any, key: str, fail) -> None:
    """Every number in the file is finite: TOML's ``inf`` and ``nan`` are refused, naming the key."""
    if isinstance(value, float) and not math.isfinite(value):
        raise fail(f"{key} must be a finite number; got {value!r}.")
    items = value.items() if isinstance(value, dict) else []
    if isinstance(value, list):
        items = ((f"[{i}]", v) for i, v in enumerate(value, start=1))
    for sub, item in items:
        joined = f"{key}{sub}" if sub.startswith("[") else f"{key}.{sub}" if key else sub
        _check_finite(item, joined, fail)


def parse_recipe(path: Path) -> Recipe:
    """Read and validate one recipe file, so that a bad recipe fails when it is loaded.

    Checks keys, value types, allowed values, the ``[optimizer]`` arguments against the Keras
    optimizer and each stage's schedule. Errors name the file, the key, the allowed values and
    the value received.
    """
    data = _read_toml(path)

    def fail(message: str) -> ZooError:
        return ZooError(f"recipe file {path}: {message}")

    unknown = set(data) - _TOP_KEYS - {"input", "stages"}
    if unknown:
        raise fail(
            f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS | {'input', 'stages'})}."
        )
    for key in ("source", "backbone", "stages"):
        if key not in data:
            raise fail(f"missing required key '{key}'.")
    fields = {k: v for k, v in data.items() if k not in ("input", "stages")}
    fields = _checked(Recipe, fields, prefix="", fail=fail)
    fields.setdefault("name", path.stem)
    try:
        backbone = get_backbone(fields["backbone"])
    except ZooError as exc:
        raise fail(f"backbone: {exc}") from None
    if not is_valid_name(fields["name"]):
        raise fail(
            f"name must be {NAME_RULE} (it names members' directories); got {fields['name']!r}."
        )
    _check_finite(data, "", fail)

    raw_input = data.get("input", {})
    if not isinstance(raw_input, dict):
        raise fail(f"[input] must be a table; got {raw_input!r} ({_toml_type(raw_input)}).")
    inherited = {
        "size": backbone.size,
        "min_size": backbone.min_size,
        "preprocessing": backbone.preprocessing,
    }
    spec = _record(
        InputSpec, {**inherited, **raw_input}, table="[input]", prefix="input.", fail=fail
    )
    mismatch = check_preprocessing(backbone, spec.preprocessing, fields.get("weights", "imagenet"))
    if mismatch:
        raise fail(f"input.{mismatch}.")
    from zoo.data.images import RESAMPLING

    if spec.color_constancy not in COLOR_CONSTANCY:
        raise fail(
            f"input.color_constancy must be one of {COLOR_CONSTANCY}; got {spec.color_constancy!r}."
        )
    if spec.interpolation not in RESAMPLING:
        raise fail(
            f"input.interpolation must be one of {tuple(RESAMPLING)}; got {spec.interpolation!r}."
        )
    if spec.min_size < backbone.min_size or spec.size < spec.min_size:
        raise fail(
            f"input.size must be at least input.min_size, and input.min_size at least "
            f"{backbone.min_size} ({backbone.name}); got size = {spec.size}, "
            f"min_size = {spec.min_size}."
        )

    if not isinstance(data["stages"], list):
        raise fail(
            "stages must be an array of tables, one [[stages]] entry per phase of training; "
            f"got {_toml_type(data['stages'])}."
        )
    stages = []
    for i, raw in enumerate(data["stages"], start=1):
        stage = _record(
            Stage, raw, table=f"[[stages]] entry {i}", prefix=f"stages[{i}].", fail=fail
        )
        if stage.trainable not in TRAINABLE:
            raise fail(
                f"stages[{i}].trainable must be one of {TRAINABLE}; got {stage.trainable!r}."
            )
        if stage.epochs < 1:
            raise fail(f"stages[{i}].epochs must be a positive integer; got {stage.epochs}.")
        if stage.batchnorm not in BATCHNORM:
            raise fail(
                f"stages[{i}].batchnorm must be one of {BATCHNORM}; got {stage.batchnorm!r}."
            )
        stage = dataclasses.replace(
            stage, lr_multipliers=_multipliers(stage.lr_multipliers, f"stages[{i}]", fail)
        )
        if not stage.learning_rate > 0:
            raise fail(f"stages[{i}].learning_rate must be > 0; got {stage.learning_rate}.")
        try:
            learning_rate(stage.schedule, base=stage.learning_rate, epoch=0, epochs=stage.epochs)
        except ZooError as exc:
            raise fail(f"stages[{i}].schedule: {exc} Fix that [[stages]] entry.") from None
        stages.append(stage)
    if not stages:
        raise fail("needs at least one [[stages]] entry.")

    recipe = Recipe(input=spec, stages=tuple(stages), path=str(path), **fields)
    _check_optimizer(recipe.optimizer, fail)
    for key, ok, rule in (
        ("batch_size", recipe.batch_size >= 1, "a positive integer"),
        ("early_stopping", recipe.early_stopping >= 0, "0 (off) or a number of epochs"),
        ("dropout", 0 <= recipe.dropout < 1, "in [0, 1)"),
        ("label_smoothing", 0 <= recipe.label_smoothing < 1, "in [0, 1)"),
        ("class_weight_beta", 0 < recipe.class_weight_beta < 1, "in (0, 1)"),
    ):
        if not ok:
            raise fail(f"{key} must be {rule}; got {getattr(recipe, key)!r}.")
    if recipe.class_weight not in CLASS_WEIGHTS:
        raise fail(f"class_weight must be one of {CLASS_WEIGHTS}; got {recipe.class_weight!r}.")
    if recipe.sampling not in SAMPLING:
        raise fail(f"sampling must be one of {SAMPLING}; got {recipe.sampling!r}.")
    if recipe.sampling == "balanced" and recipe.class_weight != "none":
        raise fail(
            "use balanced sampling or class weights, not both (the prior would be corrected twice)."
        )
    return recipe


def _multipliers(raw: Any, where: str, fail) -> tuple[float, ...]:
    """``lr_multipliers``: an array of finite numbers in [0, 1]."""
    if not isinstance(raw, list | tuple) or not all(
        isinstance(m, int | float) and not isinstance(m, bool) and 0 <= m <= 1 for m in raw
    ):
        raise fail(
            f"{where}.lr_multipliers must be an array of numbers in [0, 1], early layers first "
            f"(e.g. [0.1, 0.3, 1.0]); got {raw!r}."
        )
    return tuple(float(m) for m in raw)


def recipe_dirs(workspace: Path | None = None) -> list[Path]:
    """Folders searched for recipe files, built-in first."""
    dirs = [BUILTIN_RECIPES]
    if workspace is not None:
        dirs.append(Path(workspace) / "recipes")
    for part in os.environ.get("ZOO_RECIPE_PATH", "").split(os.pathsep):
        if part:
            dirs.append(Path(part))
    return dirs


class Registry:
    """Name → recipe. Registering a name twice is an error; unknown names list close matches."""

    def __init__(self) -> None:
        self._recipes: dict[str, Recipe] = {}

    def register(self, recipe: Recipe) -> Recipe:
        if recipe.name in self._recipes:
            first = self._recipes[recipe.name].path
            raise ZooError(
                f"recipe {recipe.name!r} is defined twice: {first} and {recipe.path}; rename one."
            )
        self._recipes[recipe.name] = recipe
        return recipe

    def get(self, name: str) -> Recipe:
        if name not in self._recipes:
            raise ZooError(f"unknown recipe {name!r}.{close_matches(name, list(self._recipes))}")
        return self._recipes[name]

    def names(self) -> list[str]:
        return sorted(self._recipes)

    def __iter__(self):
        return iter(self._recipes[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._recipes)


def load_registry(dirs: Iterable[Path] | None = None) -> Registry:
    """A registry of every ``*.toml`` recipe in ``dirs`` (default: :func:`recipe_dirs`)."""
    registry = Registry()
    for folder in dirs if dirs is not None else recipe_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                registry.register(parse_recipe(path))
    return registry


def get_recipe(name: str, *, workspace: Path | None = None) -> Recipe:
    """The recipe called ``name`` from every known folder."""
    return load_registry(recipe_dirs(workspace)).get(name)
