"""zoo.training.resolve and zoo.training.run: resolving a run leaves the options it was given
unchanged; what it resolved is a frozen record of its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from zoo.data import images
from zoo.training import trainer
from zoo.training.resolve import resolve_run
from zoo.training.resume import resumed_options
from zoo.training.run import ResolvedRun, Run, TrainOptions


def test_resolving_the_demo_set_leaves_the_options_unchanged(zoo_workspace, monkeypatch):
    """The demo set's small image size and epochs are in the resolved options only."""
    monkeypatch.setattr(images, "_MEMORY", {})
    options = TrainOptions(recipe="small_cnn", workspace=zoo_workspace)
    before = options.to_dict()
    run = resolve_run(options)
    assert options.to_dict() == before
    assert options.image_size is None and options.epochs is None
    assert run.options is not options
    assert run.options.image_size == run.recipe.input.size
    assert run.options.epochs == run.recipe.epochs
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.name = "other"


def test_train_leaves_the_options_unchanged(zoo_workspace, monkeypatch):
    """``train`` resolves a copy: the caller's workspace stays a string."""
    monkeypatch.setattr(images, "_MEMORY", {})
    seen = []
    monkeypatch.setattr(trainer, "_train", lambda setup: seen.append(setup) or setup.directory)
    options = TrainOptions(recipe="small_cnn", workspace=str(zoo_workspace), image_size=32)
    before = options.to_dict()
    trainer.train(options)
    assert options.to_dict() == before and isinstance(options.workspace, str)
    (setup,) = seen
    assert isinstance(setup, ResolvedRun) and setup.options.workspace == Path(zoo_workspace)


def test_resumed_options_are_a_new_value():
    options = TrainOptions(recipe="small_cnn", workspace=Path("."), seed=1)
    state = {"options": {"epochs": 4, "seed": 3, "settings": ["input.size=40"]}}
    resumed = resumed_options(options, state)
    assert (resumed.epochs, resumed.seed, resumed.settings) == (4, 3, ["input.size=40"])
    assert (options.epochs, options.seed, options.settings) == (None, 1, ())


def test_a_run_records_each_epoch_and_the_best_so_far():
    run = Run(setup=None, weights="none", **Run.progress_of(None))
    rows = [{"val_balanced_accuracy": a, "seconds": 2.0} for a in (0.3, 0.5, 0.4)]
    for epoch, (row, best) in enumerate(zip(rows, (True, True, False), strict=True), start=1):
        run.record_epoch(row, is_best=best, epoch=epoch)
    assert run.history == rows and run.seconds == 6.0
    assert (run.best_epoch, run.best_score, run.epochs_since_best) == (2, 0.5, 1)
    state = {"history": rows[:1], "best_epoch": 1, "best_score": 0.3, "epochs_since_best": 0}
    resumed = Run(setup=None, weights="none", **Run.progress_of({**state, "seconds": 2.0}))
    assert (resumed.history, resumed.best_epoch, resumed.seconds) == (rows[:1], 1, 2.0)
