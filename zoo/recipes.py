"""Recipes: declarative training settings (TOML files) and the registry that finds them.

A recipe reads like a paper's methods paragraph: backbone, input, optimizer, schedule,
augmentation, stages and class weighting. The heavy builders live once in ``zoo.models``
and ``zoo.training``; a recipe only holds data.

Recipes are found in the built-in ``recipes/`` folder, in ``<workspace>/recipes/`` and in
every folder of ``$ZOO_RECIPE_PATH`` (``os.pathsep``-separated), so users add their own
without editing the package. A name defined twice is an error.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ZooError, close_matches

BUILTIN_RECIPES = Path(__file__).resolve().parent.parent / "recipes"
PREPROCESSING = ("inception", "torch", "caffe", "raw", "unit")
CLASS_WEIGHTS = ("none", "inverse", "effective")
SAMPLING = ("none", "balanced")
SCHEDULES = ("constant", "step", "one_cycle", "cosine")
TRAINABLE = ("all", "head")


@dataclass(frozen=True)
class InputSpec:
    """How images enter the network: read by the data pipeline, TTA and export alike."""

    size: int
    preprocessing: str = "inception"
    min_size: int = 32
    interpolation: str = "bilinear"
    crop_borders: bool = False


@dataclass(frozen=True)
class Stage:
    """One phase of training: which layers learn, for how long, at what learning rate."""

    name: str
    epochs: int
    learning_rate: float
    trainable: str = "all"
    augment: bool = True
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "constant"})


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
        data["stages"] = tuple(Stage(**s) for s in data["stages"])
        return cls(**data)

    def with_overrides(
        self,
        *,
        image_size: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        weights: str | None = None,
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


def parse_recipe(path: Path) -> Recipe:
    """Read and validate one recipe file; errors name the file and the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ZooError(f"recipe file {path} is not valid TOML: {exc}") from None
    name = data.get("name", path.stem)

    def fail(message: str) -> ZooError:
        return ZooError(f"recipe file {path}: {message}")

    unknown = set(data) - _TOP_KEYS - {"input", "stages"}
    if unknown:
        raise fail(
            f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS | {'input', 'stages'})}."
        )
    for key in ("source", "backbone", "input", "stages"):
        if key not in data:
            raise fail(f"missing required key '{key}'.")
    try:
        spec = InputSpec(**data["input"])
    except TypeError as exc:
        raise fail(f"bad [input] table: {exc}.") from None
    if spec.preprocessing not in PREPROCESSING:
        raise fail(
            f"input.preprocessing must be one of {PREPROCESSING}; got {spec.preprocessing!r}."
        )
    stages = []
    for i, raw in enumerate(data["stages"]):
        try:
            stage = Stage(**raw)
        except TypeError as exc:
            raise fail(f"bad [[stages]] entry {i + 1}: {exc}.") from None
        if stage.trainable not in TRAINABLE:
            raise fail(
                f"stages[{i + 1}].trainable must be one of {TRAINABLE}; got {stage.trainable!r}."
            )
        if stage.schedule.get("name", "constant") not in SCHEDULES:
            raise fail(
                f"stages[{i + 1}].schedule.name must be one of {SCHEDULES}; got {stage.schedule.get('name')!r}."
            )
        stages.append(stage)
    if not stages:
        raise fail("needs at least one [[stages]] entry.")
    fields = {k: v for k, v in data.items() if k not in ("input", "stages")}
    fields["name"] = name
    recipe = Recipe(input=spec, stages=tuple(stages), path=str(path), **fields)
    if recipe.class_weight not in CLASS_WEIGHTS:
        raise fail(f"class_weight must be one of {CLASS_WEIGHTS}; got {recipe.class_weight!r}.")
    if recipe.sampling not in SAMPLING:
        raise fail(f"sampling must be one of {SAMPLING}; got {recipe.sampling!r}.")
    if recipe.sampling == "balanced" and recipe.class_weight != "none":
        raise fail(
            "use balanced sampling or class weights, not both (the prior would be corrected twice)."
        )
    return recipe


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
