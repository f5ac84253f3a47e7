"""Learning-rate schedules as functions of (fractional) epochs elapsed in a stage.

``constant``; ``step`` (× ``factor`` every ``every`` epochs: Esteva's ÷16 every 30);
``cosine`` (linear warm-up over ``warmup`` epochs, then cosine decay to zero);
``one_cycle`` (Smith 2018: rise from lr/``div`` to lr over the first ``warmup`` fraction,
then cosine annealing to lr/``final_div``); ``cosine_restarts`` (SGDR, Loshchilov & Hutter
2017, as snapshot ensembles use it: ``cycles`` cosine decays from lr to zero, each restarting
at lr, the stage cut into cycles at whole epochs by :func:`cycle_ends`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from zoo.errors import ZooError

_ALLOWED = {
    "constant": set(),
    "step": {"every", "factor"},
    "cosine": {"warmup"},
    "one_cycle": {"warmup", "div", "final_div"},
    "cosine_restarts": {"cycles"},
}


def check_schedule(schedule: Any) -> None:
    """Raise a ZooError unless ``schedule`` is a known schedule with valid numeric options."""
    if not isinstance(schedule, dict):
        raise ZooError(
            f'a schedule must be a table such as {{ name = "step", every = 30 }}; got {schedule!r}.'
        )
    name = schedule.get("name", "constant")
    if not isinstance(name, str) or name not in _ALLOWED:
        raise ZooError(f"schedule name must be one of {', '.join(_ALLOWED)}; got {name!r}.")
    unknown = set(schedule) - {"name"} - _ALLOWED[name]
    if unknown:
        raise ZooError(
            f"schedule {name!r} takes {sorted(_ALLOWED[name]) or 'no options'}; got {sorted(unknown)}."
        )
    for key in sorted(set(schedule) - {"name"}):
        value = schedule[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ZooError(
                f"schedule {name!r} option {key!r} must be a number; got {value!r} "
                f"({type(value).__name__}). Write a number without quotes."
            )
        if key == "cycles":
            ok, rule = (
                isinstance(value, int) and value >= 1,
                "a positive integer (the number of cycles)",
            )
        elif key == "warmup" and name == "one_cycle":
            ok, rule = 0 <= value <= 1, "between 0 and 1 (a fraction of the stage)"
        elif key == "warmup":
            ok, rule = value >= 0, "≥ 0 (epochs)"
        else:
            ok, rule = value > 0, "> 0"
        if not ok:
            raise ZooError(f"schedule {name!r} option {key!r} must be {rule}; got {value!r}.")
    if name == "cosine_restarts" and "cycles" not in schedule:
        raise ZooError(
            "schedule 'cosine_restarts' needs cycles, e.g. "
            '{ name = "cosine_restarts", cycles = 3 }; got none.'
        )


@dataclass(frozen=True)
class ScheduleSpec:
    """A stage's ``schedule = { name = …, … }``; an option left out (None) takes its default."""

    name: str = "constant"
    every: float | None = None
    factor: float | None = None
    warmup: float | None = None
    div: float | None = None
    final_div: float | None = None
    cycles: int | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> ScheduleSpec:
        check_schedule(raw)
        return cls(**raw)

    def as_dict(self) -> dict[str, Any]:
        """The options given, as written in the recipe."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def get(self, key: str, default: float) -> float:
        value = getattr(self, key)
        return default if value is None else value


def cycle_ends(epochs: int, cycles: int) -> list[int]:
    """The epochs (1-based, within the stage) that end each of ``cycles`` cycles: whole epochs,
    as even as they go (4 epochs, 3 cycles: 1, 2, 4)."""
    return [k * epochs // cycles for k in range(1, cycles + 1)]


def learning_rate(
    schedule: ScheduleSpec | dict[str, Any], *, base: float, epoch: float, epochs: int
) -> float:
    """The learning rate ``epoch`` epochs (fractional) into a stage of ``epochs`` epochs."""
    if not isinstance(schedule, ScheduleSpec):
        schedule = ScheduleSpec.from_dict(schedule)
    name = schedule.name
    if name == "constant":
        return base
    if name == "step":
        return base * schedule.get("factor", 0.1) ** math.floor(epoch / schedule.get("every", 30))
    if name == "cosine":
        warmup = schedule.get("warmup", 0)
        if epoch < warmup:
            return base * (epoch + 1e-3) / warmup
        span = max(epochs - warmup, 1e-9)
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch - warmup) / span)))
    if name == "cosine_restarts":
        start = 0
        for end in cycle_ends(epochs, int(schedule.get("cycles", 1))):
            if epoch < end or end == epochs:
                progress = min(1.0, (epoch - start) / max(end - start, 1e-9))
                return base * 0.5 * (1 + math.cos(math.pi * progress))
            start = end
    fraction = min(1.0, epoch / max(epochs, 1e-9))
    warmup = schedule.get("warmup", 0.3)
    low, final = base / schedule.get("div", 25.0), base / schedule.get("final_div", 1e4)
    if fraction < warmup:
        return low + (base - low) * 0.5 * (1 - math.cos(math.pi * fraction / warmup))
    progress = (fraction - warmup) / max(1 - warmup, 1e-9)
    return final + (base - final) * 0.5 * (1 + math.cos(math.pi * progress))
