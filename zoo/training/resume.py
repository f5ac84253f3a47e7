"""What ``--resume`` goes on from: ``state.json`` and the checkpoint in ``runs/<name>/``.

The trainer writes both after every epoch (:func:`state_record`); this module reads them back
(:func:`read_state`, :func:`load_checkpoint`), refuses options that contradict the interrupted
run (:func:`check_resume_options`) and starts over a run stopped before its first checkpoint
(:func:`forget_empty_run`). A damaged file is one :class:`ZooError` naming it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

import keras

from zoo import console
from zoo.data.splits import Split
from zoo.errors import ZooError
from zoo.recipes.recipe import Recipe
from zoo.store.records import RunStateRecord
from zoo.training.run import Run, TrainOptions

# Options that shape a run: --resume refuses values that contradict the interrupted run's
# (a changed data set is caught by its fingerprint).
RESUME_OPTIONS = (
    "epochs",
    "batch_size",
    "image_size",
    "crop_borders",
    "weights",
    "seed",
    "split_seed",
    "fold",
    "folds",
    "settings",
)

STATE_KEYS = (
    "recipe",
    "split",
    "weights",
    "fingerprint",
    "epochs_done",
    "best_epoch",
    "best_score",
    "epochs_since_best",
    "history",
    "seconds",
)


def given_options(options: TrainOptions) -> dict:
    """The options of :data:`RESUME_OPTIONS` that were given (differ from their defaults)."""
    unset = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    return {k: getattr(options, k) for k in RESUME_OPTIONS if getattr(options, k) != unset[k]}


def resumed_options(options: TrainOptions, state: dict) -> TrainOptions:
    """``options`` with the interrupted run's values of :data:`RESUME_OPTIONS`."""
    saved = state.get("options") or {}
    return dataclasses.replace(
        options, **{key: saved.get(key, getattr(options, key)) for key in RESUME_OPTIONS}
    )


def forget_empty_run(directory: Path, *, resume: bool) -> None:
    """A run interrupted before its first checkpoint holds nothing to resume: start it over."""
    if directory.exists() and not (directory / "state.json").exists():
        console.warn(
            f"{directory} holds no checkpoint (stopped in its first epoch); starting over."
        )
        shutil.rmtree(directory)
    elif resume and not directory.exists():
        console.info(
            f"--resume: no checkpoint of this run in {directory.parent}; starting from epoch 1."
        )


def check_resume_options(state: dict, recipe: Recipe, given: dict, *, file: Path) -> None:
    """Refuse options given with --resume that contradict the interrupted run, naming them."""
    saved = state.get("options") if isinstance(state.get("options"), dict) else {}
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    effective = {
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "image_size": recipe.input.size,
        "crop_borders": recipe.input.crop_borders,
        "weights": state["weights"],
    }
    clashes = [
        f"--{'set' if key == 'settings' else key.replace('_', '-')} {value} "
        f"(the run has {saved.get(key, effective.get(key))})"
        for key, value in given.items()
        if value is not None and value not in (saved.get(key), effective.get(key, saved.get(key)))
    ]
    if clashes:
        raise ZooError(
            f"--resume: {', '.join(clashes)} contradict the interrupted run in {file.parent}; "
            "drop those options to continue it, or delete that folder to start over."
        )


def read_state(file: Path) -> tuple[dict, Recipe, Split]:
    """The ``state.json`` of an interrupted run with its recipe and split; a damaged file is a
    :class:`ZooError` that names it and says what to do."""
    fix = f"the run cannot be resumed: delete {file.parent} and train again without --resume"
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ZooError(f"--resume: cannot read {file} ({reason}); {fix}.") from None
    if not isinstance(state, dict):
        raise ZooError(
            f"--resume: {file} holds a JSON {type(state).__name__}, not an object; {fix}."
        )
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise ZooError(f"--resume: {file} is damaged: no {', '.join(missing)}; {fix}.")
    try:  # every value the run goes on from, checked by its record in zoo.store
        RunStateRecord.from_dict(state)
    except ValueError as exc:
        raise ZooError(f"--resume: {file} is damaged ({exc}); {fix}.") from None
    try:
        return state, Recipe.from_dict(state["recipe"]), Split.from_dict(state["split"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ZooError(
            f"--resume: {file} is damaged (its recipe or split: {exc.__class__.__name__}: {exc}); "
            f"{fix}."
        ) from None


def state_record(run: Run, *, epochs_done: int) -> dict:
    """``state.json`` after ``epochs_done`` epochs: what :func:`read_state` reads back."""
    setup = run.setup
    return {
        "name": setup.name,
        "options": setup.options.to_dict(),
        "recipe": setup.recipe.as_dict(),
        "weights": run.weights,
        "split": setup.split.to_dict(),
        "fingerprint": setup.dataset.fingerprint,
        "epochs_done": epochs_done,
        "best_epoch": run.best_epoch,
        "best_score": run.best_score,
        "epochs_since_best": run.epochs_since_best,
        "history": run.history,
        "seconds": run.seconds,
        **({"extras": run.extras.state()} if run.extras is not None else {}),
    }


def load_checkpoint(file: Path):
    """The model of an interrupted run; a missing or damaged file is a :class:`ZooError`."""
    import zoo.models.layers  # noqa: F401  (the custom layers a checkpoint may hold)
    import zoo.training.augment  # noqa: F401
    import zoo.training.finetune  # noqa: F401  (discriminative optimizers)

    try:
        return keras.saving.load_model(file, safe_mode=True)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ZooError(
            f"--resume: cannot load the checkpoint {file} ({reason}); the run cannot be resumed: "
            f"delete {file.parent} and train again without --resume."
        ) from None
