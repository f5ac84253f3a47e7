"""The options of :func:`zoo.evaluation.evaluate.evaluate_target` and of
:meth:`zoo.deploy.model.Model.predict` checked by kind, for the Python API (``zoo.evaluate``,
``model.predict``), which hands them over unparsed; what each value means (a known
split, TTA scheme, task, operating point) is checked where it is used."""

from __future__ import annotations

from collections.abc import Mapping

from zoo.kinds import (
    check_flag,
    check_mapping,
    check_path,
    check_text,
    check_texts,
    check_whole,
    fail,
)

MAX_BOOTSTRAP = 1_000_000


def check_scoring_options(options: dict, what: str = "evaluation") -> None:
    """Check each option given in ``options`` (keyword -> value) against its kind; ``what``
    names the call in the message."""
    for name, value in options.items():
        if name in ("split", "tta", "task"):
            check_text(what, name, value, optional=True)
        elif name in ("prior_correction", "calibrate"):
            check_flag(what, name, value, optional=True)
        elif name in ("ignore_unmapped", "tsne", "ood_scores", "calibrated", "progress"):
            check_flag(what, name, value)
        elif name == "bootstrap":
            check_whole(what, name, value, 0, MAX_BOOTSTRAP)
        elif name == "operating_points":
            check_texts(what, name, value)
        elif name == "label_map":
            check_mapping(what, name, value, optional=True)
        elif name == "target_priors" and not isinstance(value, (str, Mapping, type(None))):
            fail(what, name, "'uniform', a JSON file name or a dict of priors", value)
        elif name == "out":
            check_path(what, name, value, optional=True)
