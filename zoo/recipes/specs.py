"""The typed parts of a recipe, each checked whole when the recipe is loaded (Keras-free).

Every field declares its type (the annotation) and, where it has one, its rule
(:func:`rule`: allowed choices, or a test with the words that describe it). :func:`build`
turns a TOML table into a spec: unknown keys (with the close match), missing keys, types
and rules are checked, and the first problem is a one-line ZooError naming the key and the
value. ``zoo.training.augment``, ``zoo.models`` and ``zoo.training`` build from these specs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from zoo.data.images import MAX_IMAGE_SIZE
from zoo.data.metadata import FIELDS as METADATA_FIELDS
from zoo.data.metadata import are_fields as are_metadata_fields
from zoo.errors import ZooError, close_matches
from zoo.models.backbones import PREPROCESSING
from zoo.recipes.schedules import ScheduleSpec

MISSING = dataclasses.MISSING
TOML_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def rule(default: Any = MISSING, *, choices: Any = (), ok=None, says: str = "") -> Any:
    """A dataclass field whose value must be one of ``choices`` (a tuple, or a function giving
    one) or pass ``ok`` (described by ``says``)."""
    metadata = {"choices": choices, "ok": ok, "says": says}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


def did_you_mean(name: Any, choices) -> str:
    """' Did you mean X?' when ``name`` is close to one of ``choices``, else ''."""
    near = close_matches(str(name), [str(c) for c in choices])
    return near if "Did you mean" in near else ""


def toml_type(value: Any) -> str:
    kinds = {bool: "boolean", str: "string", int: "integer", float: "float", list: "array"}
    return kinds.get(type(value), "table" if isinstance(value, dict) else type(value).__name__)


def how_to_fix(kind: type, key: str, value: Any) -> str:
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
    return f"Change it to {TOML_TYPES[kind]}."


def check_type(kind: type, value: Any, key: str) -> Any:
    """``value`` as a ``kind`` (an integer is accepted, as a float, where a number is asked)."""
    if kind is float and type(value) is int:
        return float(value)
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        name = key.rsplit(".", 1)[-1].split("]")[-1] or key
        raise ZooError(
            f"{key} must be {TOML_TYPES[kind]}; got {value!r} ({toml_type(value)}). "
            + how_to_fix(kind, name, value)
        )
    return value


def _checked(hint: Any, spec: dataclasses.Field, value: Any, key: str) -> Any:
    """One value checked against its field's type and rule."""
    kind = typing.get_origin(hint) or hint
    options = typing.get_args(hint) if kind in (types.UnionType, typing.Union) else ()
    if type(None) in options and len(options) == 2:  # ``X | None``: None means "left out"
        hint = kind = next(a for a in options if a is not type(None))
    if kind in TOML_TYPES:
        value = check_type(kind, value, key)
    elif kind is dict and not isinstance(value, dict):
        raise ZooError(f"{key} must be a table; got {value!r} ({toml_type(value)}).")
    elif dataclasses.is_dataclass(kind):
        return from_table(kind, value, key)
    choices = spec.metadata.get("choices", ())
    choices = choices() if callable(choices) else choices
    if choices and value not in choices:
        raise ZooError(
            f"{key} must be one of {tuple(choices)}; got {value!r}.{did_you_mean(value, choices)}"
        )
    ok = spec.metadata.get("ok")
    if ok is not None and not ok(value):
        raise ZooError(f"{key} must be {spec.metadata['says']}; got {value!r}.")
    if kind is tuple:
        item = (typing.get_args(hint) or (float,))[0]
        return tuple(item(v) for v in value)
    return value


def from_table(cls: type, raw: Any, key: str) -> Any:
    """A nested spec: the class's own ``from_dict`` (errors prefixed with ``key``) or :func:`build`."""
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise ZooError(f"{key} must be a table; got {raw!r} ({toml_type(raw)}).")
    if not hasattr(cls, "from_dict"):
        return build(cls, raw, table=f"[{key}]", prefix=f"{key}.")
    try:
        return cls.from_dict(raw)
    except ZooError as exc:
        message = str(exc)
        raise ZooError(message if message.startswith(key) else f"{key}: {message}") from None


def build(cls: type, raw: Any, *, table: str, prefix: str) -> Any:
    """``cls(**raw)`` once ``raw`` is a table of known keys, with every required key and every
    value of the right type and within its rule."""
    return cls(**checked_table(cls, raw, table=table, prefix=prefix))


def checked_table(cls: type, raw: Any, *, table: str, prefix: str, ready=()) -> dict[str, Any]:
    """The checked values of :func:`build`; the fields named in ``ready`` are built apart."""
    if not isinstance(raw, dict):
        what = prefix.rstrip(".") or table
        raise ZooError(f"{what} must be a table; got {raw!r} ({toml_type(raw)}).")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ZooError(
            f"bad {table} table: unknown key(s) {unknown}; allowed: {sorted(fields)}."
            + did_you_mean(unknown[0], fields)
        )
    missing = [
        name
        for name, f in fields.items()
        if name not in raw
        and name not in ready
        and f.default is MISSING
        and f.default_factory is MISSING
    ]
    if missing:
        raise ZooError(
            f"bad {table} table: missing required key {', '.join(map(repr, missing))}; add it."
        )
    hints = typing.get_type_hints(cls)
    return {k: _checked(hints[k], fields[k], v, f"{prefix}{k}") for k, v in raw.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fraction(upper: float = 1.0, *, closed: bool = True) -> Any:
    """A field for a fraction in [0, upper] (or [0, upper)); 0 leaves the step out."""
    return rule(
        0.0,
        ok=lambda v: 0 <= v <= upper if closed else 0 <= v < upper,
        says=f"a fraction in [0, {upper:g}{']' if closed else ')'} (0 leaves it out)",
    )


def _resampling() -> tuple[str, ...]:
    from zoo.data.images import RESAMPLING

    return tuple(RESAMPLING)


FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")
CLASS_WEIGHTS = ("none", "inverse", "effective")
SAMPLING = ("none", "balanced")
TRAINABLE = ("all", "head")
BATCHNORM = ("train", "frozen")
COLOR_CONSTANCY = ("none", "shades_of_gray")


METADATA_SAYS = f"a list of distinct names out of {', '.join(METADATA_FIELDS)} (or [])"


@dataclass(frozen=True)
class ModelSpec:
    """The network: a backbone of the table in ``zoo.models.backbones``, its starting weights
    (``imagenet``, ``none``, ``auto`` or a file), dropout before the head, builder options,
    and the per-image metadata the head reads beside the image features (none by default)."""

    backbone: str = rule()  # a name of zoo.models.backbones.BACKBONES
    weights: str = "imagenet"
    dropout: float = rule(0.0, ok=lambda v: 0 <= v < 1, says="in [0, 1)")
    backbone_options: dict[str, Any] = rule({})
    metadata: tuple[str, ...] = rule((), ok=are_metadata_fields, says=METADATA_SAYS)


@dataclass(frozen=True)
class InputSpec:
    """How images enter the network: read by the data pipeline, TTA and export alike."""

    size: int = rule(ok=lambda v: 1 <= v <= MAX_IMAGE_SIZE, says=f"from 1 to {MAX_IMAGE_SIZE} px")
    preprocessing: str = rule("inception", choices=PREPROCESSING)
    min_size: int = rule(
        32, ok=lambda v: 1 <= v <= MAX_IMAGE_SIZE, says=f"from 1 to {MAX_IMAGE_SIZE} px"
    )
    interpolation: str = rule("bilinear", choices=_resampling)
    crop_borders: bool = False
    # "shades_of_gray": colour constancy (Minkowski p = 6) inside the model, before the
    # backbone's normalisation; "none": pixels as decoded.
    color_constancy: str = rule("none", choices=COLOR_CONSTANCY)


@dataclass(frozen=True)
class AugmentSpec:
    """``[augment]``: training augmentation (built by :func:`zoo.training.augment.build_augmenter`).

    ``rotation`` is ``"inscribed"`` (Esteva: 0–359°, largest inscribed square kept) or up to
    ± that many degrees; ``hue`` is a fraction of the colour wheel; ``erasing`` a probability;
    the others fractions of the image size or of the colour range. 0 leaves a step out.
    """

    flip: str = rule("none", choices=FLIPS)
    rotation: float | str = rule(
        0,
        ok=lambda v: v == "inscribed" or (_is_number(v) and 0 <= v <= 180),
        says='"inscribed" or a number of degrees in [0, 180] (e.g. rotation = 180)',
    )
    zoom: float = _fraction(closed=False)
    translate: float = _fraction(closed=False)
    brightness: float = _fraction()
    contrast: float = _fraction()
    saturation: float = _fraction()
    hue: float = _fraction(0.5)
    erasing: float = _fraction()

    @property
    def active(self) -> bool:
        """Whether any step changes the images."""
        return self != AugmentSpec()


# ``[optimizer] name`` → the class in ``keras.optimizers`` (zoo.training.finetune builds it).
OPTIMIZERS = {
    "adam": "Adam",
    "adamw": "AdamW",
    "sgd": "SGD",
    "rmsprop": "RMSprop",
    "nadam": "Nadam",
}
_CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")
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


@dataclass(frozen=True)
class OptimizerSpec:
    """``[optimizer]``: a Keras optimizer by name and the keyword arguments its class accepts."""

    name: str = "adam"
    arguments: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any) -> OptimizerSpec:
        """A known name and only arguments its Keras class accepts, of the right type."""
        name = raw.get("name", "adam")
        if not isinstance(name, str) or name not in OPTIMIZERS:
            raise ZooError(
                f"optimizer.name must be one of {', '.join(OPTIMIZERS)}; got {name!r}."
                + did_you_mean(name, OPTIMIZERS)
            )
        accepted, keras_name = optimizer_arguments(name), f"keras.optimizers.{OPTIMIZERS[name]}"
        arguments = {k: v for k, v in raw.items() if k != "name"}
        for key, value in arguments.items():
            if key == "learning_rate":
                raise ZooError(
                    "optimizer.learning_rate is not used: set learning_rate in each [[stages]] entry."
                )
            if key not in accepted:
                raise ZooError(
                    f"optimizer.{key} is not an argument of {keras_name} (optimizer {name!r}); "
                    f"allowed: {', '.join(sorted(accepted))}.{did_you_mean(key, accepted)}"
                )
            default = accepted[key]
            kind = bool if isinstance(default, bool) else float
            try:
                check_type(kind, value, f"optimizer.{key}")
            except ZooError as exc:
                raise ZooError(str(exc).replace("; got", f" ({keras_name}); got", 1)) from None
        clipping = [k for k in _CLIPPING if k in arguments]
        if len(clipping) > 1:
            raise ZooError(
                f"optimizer: set at most one of {', '.join(_CLIPPING)}; got {', '.join(clipping)}."
            )
        return cls(name, arguments)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.arguments}


@dataclass(frozen=True)
class SwaSpec:
    """A stage's ``swa = { start = E }``: stochastic weight averaging (Izmailov et al. 2018).

    The weights at the end of every epoch of the stage from its epoch ``start`` (1-based) on
    are averaged; with ``learning_rate`` > 0 the stage runs at that constant rate from then on
    (0: the stage's schedule goes on). The average becomes the member ``<name>.swa``.
    """

    start: int = rule(ok=lambda v: v >= 1, says="an epoch of the stage, counted from 1")
    learning_rate: float = rule(0.0, ok=lambda v: v >= 0, says="0 (the stage's schedule) or > 0")


@dataclass(frozen=True)
class StageSpec:
    """One phase of training: which layers learn, for how long, at what learning rate."""

    name: str
    epochs: int = rule(ok=lambda v: v >= 1, says="a positive integer")
    learning_rate: float = rule(ok=lambda v: v > 0, says="> 0")
    trainable: str = rule("all", choices=TRAINABLE)
    augment: bool = True
    schedule: ScheduleSpec = ScheduleSpec()
    # Discriminative learning rates: the backbone cut into len(...) groups of layers, early to
    # late, each learning at learning_rate × its multiplier (0 freezes the group); the head
    # learns at learning_rate. Empty: every layer at learning_rate.
    lr_multipliers: tuple[float, ...] = rule(
        (),
        ok=lambda v: isinstance(v, list | tuple) and all(_is_number(m) and 0 <= m <= 1 for m in v),
        says="an array of numbers in [0, 1], early layers first (e.g. [0.1, 0.3, 1.0])",
    )
    # "frozen": batch-norm layers of the backbone keep their (ImageNet) statistics and scales,
    # as in Keras' transfer-learning guide; "train": they learn like the other layers.
    batchnorm: str = rule("train", choices=BATCHNORM)
    # Cheap extra members and progressive resizing; off by default, and then left out of the
    # resolved recipe (:meth:`as_dict`), which reads as before they existed.
    # Snapshot ensembles (Huang et al. 2017): with schedule "cosine_restarts", the weights at
    # the end of each cycle become the members <name>.snap1 … <name>.snapM.
    snapshots: bool = False
    swa: SwaSpec | None = None
    # Progressive resizing: this stage trains at image_size px (None: the member's input size).
    image_size: int | None = rule(None, ok=lambda v: v >= 1, says="a positive number of pixels")

    def as_dict(self) -> dict[str, Any]:
        """The stage as plain data; the options that are off are left out."""
        data = {f.name: as_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {k: v for k, v in data.items() if k not in _OFF or v != _OFF[k]}


# The stage options that leave a stage as it was before they existed.
_OFF = {"snapshots": False, "swa": None, "image_size": None}


def check_stages(stages: tuple[StageSpec, ...], spec: InputSpec) -> None:
    """The checks that join a stage's options to its epochs, the input size and the other
    stages; the first problem is a ZooError naming ``stages[i].<key>`` and the value."""
    for i, stage in enumerate(stages, start=1):
        where, cycles = f"stages[{i}]", stage.schedule.cycles
        if cycles is not None and cycles > stage.epochs:
            raise ZooError(
                f"{where}.schedule cycles must be at most the stage's epochs ({stage.epochs}); "
                f"got {cycles}."
            )
        if stage.snapshots and stage.schedule.name != "cosine_restarts":
            raise ZooError(
                f'{where}.snapshots = true needs schedule = {{ name = "cosine_restarts", '
                f"cycles = M }}; got schedule {stage.schedule.name!r}."
            )
        if stage.swa is not None and stage.swa.start > stage.epochs:
            raise ZooError(
                f"{where}.swa.start must be an epoch of the stage (1 to {stage.epochs}); "
                f"got {stage.swa.start}."
            )
        if stage.image_size is not None and not spec.min_size <= stage.image_size <= spec.size:
            raise ZooError(
                f"{where}.image_size must be from input.min_size to input.size "
                f"({spec.min_size} to {spec.size} px); got {stage.image_size}."
            )
    for key in ("snapshots", "swa"):
        using = [i for i, s in enumerate(stages, start=1) if getattr(s, key) not in (False, None)]
        if len(using) > 1:
            raise ZooError(
                f"{key} may be set in one stage only (its members are named once); "
                f"got stages {', '.join(map(str, using))}."
            )


def as_dict(spec: Any) -> Any:
    """A spec as plain TOML/JSON data: the shape it is read from."""
    if hasattr(spec, "as_dict"):
        return spec.as_dict()
    if dataclasses.is_dataclass(spec):
        return {f.name: as_dict(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
    if isinstance(spec, tuple | list):
        return [as_dict(item) for item in spec]
    return spec
