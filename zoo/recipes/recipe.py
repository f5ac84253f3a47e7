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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.data.images import MAX_BATCH_SIZE, check_bound
from zoo.errors import ZooError, close_matches
from zoo.models.backbones import check_preprocessing, get_backbone
from zoo.recipes.specs import (
    CLASS_WEIGHTS,
    OPTIMIZERS,
    SAMPLING,
    AugmentSpec,
    InputSpec,
    ModelSpec,
    OptimizerSpec,
    StageSpec,
    as_dict,
    build,
    check_stages,
    checked_table,
    did_you_mean,
    optimizer_arguments,
    rule,
    toml_type,
)
from zoo.store.names import NAME_RULE, is_valid_name


def builtin_folder(kind: str) -> Path:
    """The built-in ``recipes`` or ``ensembles`` folder.

    The top-level folders of the repository are the source of truth; a wheel carries copies
    as ``zoo/_builtin/<kind>/`` (see ``setup.py``). An installed package reads those, an
    editable checkout the top-level folder.
    """
    packaged = Path(str(importlib.resources.files("zoo"))) / "_builtin" / kind
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / kind


BUILTIN_RECIPES = builtin_folder("recipes")
# The network's keys are written at the top level of a recipe, beside its other settings.
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelSpec))


@dataclass(frozen=True)
class Recipe:
    """A registered training recipe (see ``recipes/*.toml``), every part typed and checked."""

    name: str = rule(ok=is_valid_name, says=f"{NAME_RULE} (it names members' directories)")
    source: str = rule()
    model: ModelSpec = rule()
    input: InputSpec = rule()
    stages: tuple[StageSpec, ...] = rule()
    description: str = ""
    optimizer: OptimizerSpec = OptimizerSpec()
    augment: AugmentSpec = AugmentSpec()
    class_weight: str = rule("none", choices=CLASS_WEIGHTS)
    class_weight_beta: float = rule(0.999, ok=lambda v: 0 < v < 1, says="in (0, 1)")
    sampling: str = rule("none", choices=SAMPLING)
    label_smoothing: float = rule(0.0, ok=lambda v: 0 <= v < 1, says="in [0, 1)")
    batch_size: int = rule(
        32, ok=lambda v: 1 <= v <= MAX_BATCH_SIZE, says=f"from 1 to {MAX_BATCH_SIZE} images"
    )
    early_stopping: int = rule(0, ok=lambda v: v >= 0, says="0 (off) or a number of epochs")
    path: str = ""

    @property
    def epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def as_dict(self) -> dict[str, Any]:
        """The fully resolved recipe as plain data in the shape of a recipe file, plus its
        ``path`` (``member.json``'s ``config.recipe``)."""
        data = {f.name: as_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}
        model = data.pop("model")
        if not model["metadata"]:  # the default: recipes from before the option read the same
            del model["metadata"]
        return {**model, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`as_dict`, with every check of a recipe file."""
        data = dict(data)
        path = data.pop("path", "")
        return _recipe(data, name=data.get("name", ""), path=path)

    def with_settings(self, settings: Iterable[str]) -> Recipe:
        """A copy with ``--set KEY=VALUE`` settings applied, each checked as in a file."""
        recipe = self
        for setting in settings:
            key, value = parse_setting(setting)
            data = recipe.as_dict()
            if key == "optimizer.name" and value in OPTIMIZERS:
                data["optimizer"] = _arguments_kept(data["optimizer"], value)
            _assign(data, key, value, setting)
            try:
                recipe = Recipe.from_dict(data)
            except ZooError as exc:
                raise ZooError(f"--set {setting}: {exc}") from None
        return recipe

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
                    f"(backbone {self.model.backbone} needs at least {self.input.min_size} px)."
                )
            recipe = dataclasses.replace(
                recipe, input=dataclasses.replace(recipe.input, size=image_size)
            )
            _stages_checked(recipe, f"--image-size {image_size}")
        if epochs is not None:
            recipe = dataclasses.replace(recipe, stages=scale_stages(recipe.stages, epochs))
            _stages_checked(recipe, f"--epochs {epochs}")
        if batch_size is not None:
            check_bound("batch_size", batch_size, option="--batch-size")
            recipe = dataclasses.replace(recipe, batch_size=batch_size)
        if weights is not None:
            recipe = dataclasses.replace(
                recipe, model=dataclasses.replace(recipe.model, weights=weights)
            )
        if crop_borders is not None:
            recipe = dataclasses.replace(
                recipe, input=dataclasses.replace(recipe.input, crop_borders=crop_borders)
            )
        return recipe


def _stages_checked(recipe: Recipe, option: str) -> None:
    """The stage checks of a recipe file, again after a command-line override."""
    try:
        check_stages(recipe.stages, recipe.input)
    except ZooError as exc:
        raise ZooError(f"{option}: {exc}") from None


def _arguments_kept(optimizer: dict[str, Any], name: str) -> dict[str, Any]:
    """The arguments of ``optimizer`` that optimizer ``name`` accepts too; the others are
    dropped with a warning (``--set optimizer.name=sgd`` on an RMSprop recipe drops ``rho``)."""
    accepted = optimizer_arguments(name)
    dropped = sorted(k for k in optimizer if k != "name" and k not in accepted)
    if dropped:
        from zoo import console

        console.warn(f"--set optimizer.name={name}: dropped optimizer {', '.join(dropped)}.")
    return {k: v for k, v in optimizer.items() if k not in dropped}


def parse_setting(setting: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value): the value read as a TOML value (``96``, ``0.5``,
    ``true``, ``[1, 2]``, ``"text"``), or as a string when it is none (``sgd``)."""
    key, sep, text = setting.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ZooError(
            f"--set {setting!r}: write KEY=VALUE, e.g. --set input.size=96 or --set stages.1.epochs=2."
        )
    try:
        value = tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return key, value


def _assign(data: dict[str, Any], key: str, value: Any, setting: str) -> None:
    """Set dotted ``key`` (``input.size``, ``stages.2.epochs``: stages count from 1) in ``data``."""
    *parents, last = key.split(".")
    node: Any = data
    for depth, part in enumerate([*parents, last]):
        where = ".".join(parents[:depth]) or "the recipe"
        if isinstance(node, list):
            if not part.isdigit() or not 1 <= int(part) <= len(node):
                raise ZooError(
                    f"--set {setting}: {where} has no entry {part!r}; "
                    f"use a number from 1 to {len(node)}."
                )
            if depth == len(parents):
                raise ZooError(f"--set {setting}: set one key of {key}, e.g. {key}.epochs.")
            node = node[int(part) - 1]
        elif not isinstance(node, dict):
            raise ZooError(f"--set {setting}: {where} is a value, not a table.")
        elif depth == len(parents):
            node[part] = value
        else:
            node = node.setdefault(part, {})


def scale_stages(stages: tuple[StageSpec, ...], total: int) -> tuple[StageSpec, ...]:
    """Share a total epoch budget among stages in proportion to their own lengths.

    Every stage keeps at least one epoch while the budget allows; with fewer epochs than
    stages, the last stages run (fine-tuning matters more than warming up the head). A
    stage's ``swa`` keeps averaging the same share of its epochs (at least the last one).
    """
    if total < 1:
        raise ZooError(f"--epochs must be a positive integer; got {total}.")
    if total < len(stages):
        return tuple(_with_epochs(s, 1) for s in stages[-total:])
    own = sum(s.epochs for s in stages)
    counts = [max(1, round(total * s.epochs / own)) for s in stages]
    counts[-1] += total - sum(counts)
    while counts[-1] < 1:  # rounding gave earlier stages too much
        i = max(range(len(counts) - 1), key=lambda k: counts[k])
        counts[i] -= 1
        counts[-1] += 1
    return tuple(_with_epochs(s, n) for s, n in zip(stages, counts, strict=True))


def _with_epochs(stage: StageSpec, epochs: int) -> StageSpec:
    """``stage`` lasting ``epochs`` epochs; its SWA averages the same share of them."""
    swa = stage.swa
    if swa is not None and epochs != stage.epochs:
        averaged = max(1, round((stage.epochs - swa.start + 1) * epochs / stage.epochs))
        swa = dataclasses.replace(swa, start=max(1, epochs - averaged + 1))
    return dataclasses.replace(stage, epochs=epochs, swa=swa)


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


def _check_finite(value: Any, key: str) -> None:
    """Every number in the file is finite: TOML's ``inf`` and ``nan`` are refused, naming the key."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ZooError(f"{key} must be a finite number; got {value!r}.")
    items = value.items() if isinstance(value, dict) else []
    if isinstance(value, list):
        items = ((f"[{i}]", v) for i, v in enumerate(value, start=1))
    for sub, item in items:
        joined = f"{key}{sub}" if sub.startswith("[") else f"{key}.{sub}" if key else sub
        _check_finite(item, joined)


def parse_recipe(path: Path) -> Recipe:
    """Read and check one recipe file, so that a bad recipe fails when it is loaded.

    Every key, type and range is checked, the ``[optimizer]`` arguments against the Keras
    optimizer and each stage's schedule; errors name the file, the key, the allowed values
    and the value received.
    """
    try:
        return _recipe(_read_toml(path), name=path.stem, path=str(path))
    except ZooError as exc:
        message = str(exc)
        if message.startswith("recipe file "):
            raise
        raise ZooError(f"recipe file {path}: {message}") from None


def _recipe(data: dict[str, Any], *, name: str, path: str) -> Recipe:
    """A recipe from the data of a recipe file; raises a ZooError naming the first problem."""
    allowed = {f.name for f in dataclasses.fields(Recipe)} - {"model", "path"} | set(MODEL_KEYS)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ZooError(
            f"unknown key(s) {unknown}; allowed: {sorted(allowed)}."
            + did_you_mean(unknown[0], allowed)
        )
    _check_finite(data, "")
    rest = {k: v for k, v in data.items() if k not in {*MODEL_KEYS, "input", "stages"}}
    top = checked_table(
        Recipe,
        {"name": name, **rest},
        table="recipe",
        prefix="",
        ready=("model", "input", "stages"),
    )
    model = build(
        ModelSpec, {k: data[k] for k in MODEL_KEYS if k in data}, table="recipe", prefix=""
    )
    try:
        backbone = get_backbone(model.backbone)
    except ZooError as exc:
        raise ZooError(f"backbone: {exc}") from None
    raw_input = data.get("input", {})
    if not isinstance(raw_input, dict):
        raise ZooError(f"input must be a table; got {raw_input!r} ({toml_type(raw_input)}).")
    inherited = {
        "size": backbone.size,
        "min_size": backbone.min_size,
        "preprocessing": backbone.preprocessing,
    }
    spec = build(InputSpec, {**inherited, **raw_input}, table="[input]", prefix="input.")
    mismatch = check_preprocessing(backbone, spec.preprocessing, model.weights)
    if mismatch:
        raise ZooError(f"input.{mismatch}.")
    if spec.min_size < backbone.min_size or spec.size < spec.min_size:
        raise ZooError(
            f"input.size must be at least input.min_size, and input.min_size at least "
            f"{backbone.min_size} ({backbone.name}); got size = {spec.size}, "
            f"min_size = {spec.min_size}."
        )
    if "stages" not in data:
        raise ZooError("missing required key 'stages'.")
    if not isinstance(data["stages"], list):
        raise ZooError(
            "stages must be an array of tables, one [[stages]] entry per phase of training; "
            f"got {toml_type(data['stages'])}."
        )
    stages = tuple(
        build(StageSpec, raw, table=f"[[stages]] entry {i}", prefix=f"stages[{i}].")
        for i, raw in enumerate(data["stages"], start=1)
    )
    if not stages:
        raise ZooError("needs at least one [[stages]] entry.")
    check_stages(stages, spec)
    recipe = Recipe(**top, model=model, input=spec, stages=stages, path=path)
    if recipe.sampling == "balanced" and recipe.class_weight != "none":
        raise ZooError(
            "use balanced sampling or class weights, not both (the prior would be corrected twice)."
        )
    return recipe


def recipe_dirs(workspace: Path | None = None) -> list[Path]:
    """Folders searched for recipe files, built-in first."""
    return search_dirs(BUILTIN_RECIPES, workspace, "recipes", "ZOO_RECIPE_PATH")


def search_dirs(builtin: Path, workspace: Path | None, folder: str, variable: str) -> list[Path]:
    """``builtin``, ``<workspace>/<folder>`` and every folder of ``$<variable>``."""
    dirs = [builtin]
    if workspace is not None:
        dirs.append(Path(workspace) / folder)
    dirs += [Path(part) for part in os.environ.get(variable, "").split(os.pathsep) if part]
    return dirs


class Registry:
    """Name → definition (a recipe or an ensemble). A name defined twice is an error; unknown
    names list close matches."""

    def __init__(self, kind: str = "recipe") -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, item: Any) -> Any:
        if item.name in self._items:
            first = self._items[item.name].path
            raise ZooError(
                f"{self.kind} {item.name!r} is defined twice: {first} and {item.path}; rename one."
            )
        self._items[item.name] = item
        return item

    def get(self, name: str) -> Any:
        if name not in self._items:
            hint = close_matches(name, list(self._items)) if self._items else ""
            raise ZooError(f"unknown {self.kind} {name!r}.{hint} Or pass a path to a .toml file.")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self):
        return iter(self._items[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._items)


def load_registry(
    dirs: Iterable[Path] | None = None,
    *,
    parse: Callable[[Path], Any] = None,  # type: ignore[assignment]
    kind: str = "recipe",
) -> Registry:
    """A registry of every ``*.toml`` file in ``dirs`` (default: :func:`recipe_dirs`), each
    read by ``parse`` (default: :func:`parse_recipe`)."""
    registry = Registry(kind)
    for folder in dirs if dirs is not None else recipe_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                registry.register((parse or parse_recipe)(path))
    return registry


def is_path(text: str) -> bool:
    """Whether a command-line NAME is a file path (``x.toml`` or with a folder) rather than a name."""
    return text.endswith(".toml") or "/" in text or os.sep in text


def get_recipe(name: str, *, workspace: Path | None = None) -> Recipe:
    """The recipe called ``name`` from every known folder, or read from ``name`` as a file path."""
    if is_path(name):
        return parse_recipe(Path(name))
    return load_registry(recipe_dirs(workspace)).get(name)
