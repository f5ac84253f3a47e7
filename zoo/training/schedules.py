"""Learning-rate schedules as functions of (fractional) epochs elapsed in a stage.

``constant``; ``step`` (× ``factor`` every ``every`` epochs: Esteva's ÷16 every 30);
``cosine`` (linear warm-up over ``warmup`` epochs, then cosine decay to zero);
``one_cycle`` (Smith 2018: rise from lr/``div`` to lr over the first ``warmup`` fraction,
then cosine annealing to lr/``final_div``).
"""

from __future__ import annotations

import math
from typing import Any

from zoo.errors import ZooError

_ALLOWED = {
    "constant": set(),
    "step": {"every", "factor"},
    "cosine": {"warmup"},
    "one_cycle": {"warmup", "div", "final_div"},
}


def learning_rate(schedule: dict[str, Any], *, base: float, epoch: float, epochs: int) -> float:
    """The learning rate ``epoch`` epochs (fractional) into a stage of ``epochs`` epochs."""
    name = schedule.get("name", "constant")
    if name not in _ALLOWED:
        raise ZooError(f"schedule name must be one of {', '.join(_ALLOWED)}; got {name!r}.")
    unknown = set(schedule) - {"name"} - _ALLOWED[name]
    if unknown:
        raise ZooError(
            f"schedule {name!r} takes {sorted(_ALLOWED[name]) or 'no options'}; got {sorted(unknown)}."
        )
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
    fraction = min(1.0, epoch / max(epochs, 1e-9))
    warmup = schedule.get("warmup", 0.3)
    low, final = base / schedule.get("div", 25.0), base / schedule.get("final_div", 1e4)
    if fraction < warmup:
        return low + (base - low) * 0.5 * (1 - math.cos(math.pi * fraction / warmup))
    progress = (fraction - warmup) / max(1 - warmup, 1e-9)
    return final + (base - final) * 0.5 * (1 + math.cos(math.pi * progress))
