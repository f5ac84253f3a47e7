"""Every training option checked by kind before any work: the command line parses them, but the
Python API (``zoo.train(..., seed=-1)``) hands them over as given, so both pass through here."""

from __future__ import annotations

from zoo.data.images import check_bound
from zoo.kinds import (
    check_choice,
    check_flag,
    check_mapping,
    check_path,
    check_text,
    check_texts,
    check_whole,
)

MAX_SEED = 2**32 - 1  # the range NumPy and TensorFlow accept
MAX_EPOCHS = 100_000
MAX_FOLDS = 1000  # how fold and folds go together is zoo.data.splits' rule
WHAT = "training"


def check_train_options(options) -> None:
    """Check each field of a :class:`~zoo.training.run.TrainOptions` against its kind."""
    o = options
    check_text(WHAT, "recipe", o.recipe)
    check_path(WHAT, "workspace", o.workspace)
    for name in ("data", "images", "weights", "name", "partition"):
        check_text(WHAT, name, getattr(o, name), optional=True)
    check_whole(WHAT, "epochs", o.epochs, 1, MAX_EPOCHS, optional=True)
    for name in ("seed", "split_seed"):
        check_whole(WHAT, name, getattr(o, name), 0, MAX_SEED)
    for name in ("fold", "folds"):
        check_whole(WHAT, name, getattr(o, name), 0, MAX_FOLDS, optional=True)
    for name in ("resume", "mixed_precision", "feature_cache"):
        check_flag(WHAT, name, getattr(o, name))
    check_flag(WHAT, "crop_borders", o.crop_borders, optional=True)
    check_choice(WHAT, "strategy", o.strategy, ("default", "mirrored", "multi-worker"))
    check_choice(WHAT, "jit_compile", o.jit_compile, ("auto", "on", "off"))
    check_texts(WHAT, "settings", o.settings)
    check_mapping(WHAT, "extra", o.extra)
    for name in ("batch_size", "image_size"):  # zoo's resource limits
        if getattr(o, name) is not None:
            check_bound(name, getattr(o, name))
