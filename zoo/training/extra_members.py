"""Cheap extra members of one training run: a snapshot at the end of each cosine-restart cycle
(Huang et al. 2017, a stage's ``snapshots = true``) and the stochastic weight average
(Izmailov et al. 2018, ``swa = { start = E }``).

The trainer calls :meth:`ExtraMembers.after_epoch` at the end of every epoch, once the
batch-norm statistics are recomputed and before ``state.json`` is written; the files kept in
the run directory and :meth:`ExtraMembers.state` (saved in ``state.json``) let ``--resume`` go
on. When training ends, :meth:`ExtraMembers.members` puts each member's weights into the model
in turn, and the trainer saves it as it saves the run's own member.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from zoo.models.build import saved_bytes
from zoo.recipes.recipe import Recipe
from zoo.recipes.schedules import cycle_ends
from zoo.recipes.specs import StageSpec
from zoo.store.workspace import atomic_path
from zoo.training.averaging import WeightAverage, averaged_into

SNAPSHOT_FILE = "snapshot-{cycle}.weights.h5"
SWA_FILE = "swa-{epoch}.npz"


def extra_member_names(recipe: Recipe, run_name: str) -> list[str]:
    """The members a run of ``recipe`` saves besides ``run_name``: ``<run>.snap<k>``, ``<run>.swa``."""
    names = []
    for stage in recipe.stages:
        if stage.snapshots:
            names += [f"{run_name}.snap{k}" for k in range(1, stage.schedule.cycles + 1)]
        if stage.swa is not None:
            names.append(f"{run_name}.swa")
    return names


def made_by(info: dict, run_name: str) -> bool:
    """Whether ``member.json`` data says it is an extra member of the run ``run_name``."""
    return any(
        isinstance(info.get(key), dict) and info[key].get("run") == run_name
        for key in ("snapshot", "swa")
    )


@dataclass
class ExtraMembers:
    """The snapshots taken and the running weight average of one run."""

    run_name: str
    directory: Path
    stages: tuple[StageSpec, ...]
    snapshots: list[dict] = field(default_factory=list)
    average: WeightAverage | None = None
    average_file: str | None = None

    @classmethod
    def of(
        cls, recipe: Recipe, run_name: str, directory: Path, state: dict | None = None
    ) -> ExtraMembers | None:
        """The extra members of a run (None when its recipe asks for none), as ``state`` (what
        :meth:`state` returned for an interrupted run) left them."""
        if not extra_member_names(recipe, run_name):
            return None
        extras = cls(run_name, Path(directory), recipe.stages)
        state = state or {}
        extras.snapshots = [dict(s) for s in state.get("snapshots", [])]
        swa = state.get("swa")
        if swa:
            extras.average_file = swa["file"]
            extras.average = WeightAverage.load(extras.directory / swa["file"])
        return extras

    def state(self) -> dict:
        """What ``state.json`` keeps so that ``--resume`` goes on."""
        swa = None
        if self.average is not None:
            swa = {"file": self.average_file, "epochs": self.average.epochs}
        return {"snapshots": self.snapshots, "swa": swa}

    def after_epoch(
        self, model: keras.Model, stage: StageSpec, *, epoch_in_stage: int, epoch: int
    ) -> None:
        """Keep a snapshot at the end of a cycle; fold the weights into the SWA mean."""
        if stage.snapshots:
            ends = cycle_ends(stage.epochs, stage.schedule.cycles)
            if epoch_in_stage in ends:
                cycle = ends.index(epoch_in_stage) + 1
                file = SNAPSHOT_FILE.format(cycle=cycle)
                needs = saved_bytes(model)
                with atomic_path(
                    self.directory / file, suffix=".weights.h5", needs_bytes=needs
                ) as tmp:
                    model.save_weights(tmp)
                self.snapshots = [s for s in self.snapshots if s["cycle"] != cycle]
                self.snapshots.append(
                    {
                        "stage": stage.name,
                        "cycle": cycle,
                        "of": len(ends),
                        "epoch": epoch,
                        "file": file,
                    }
                )
        if stage.swa is not None and epoch_in_stage >= stage.swa.start:
            self.average = self.average or WeightAverage()
            self.average.add(model, epoch)
            file = SWA_FILE.format(epoch=epoch)
            self.average.save(self.directory / file)
            for old in self.directory.glob(SWA_FILE.format(epoch="*")):
                if old.name not in (file, self.average_file):  # state.json names the latter
                    old.unlink(missing_ok=True)
            self.average_file = file

    def missing(self, recipe: Recipe) -> list[str]:
        """Planned members that training never reached (early stopping ended it first)."""
        made = {f"{self.run_name}.snap{s['cycle']}" for s in self.snapshots}
        if self.average is not None:
            made.add(f"{self.run_name}.swa")
        return [n for n in extra_member_names(recipe, self.run_name) if n not in made]

    def members(
        self, model: keras.Model, *, pixels: np.ndarray, batch_size: int, seed: int = 0
    ) -> Iterator[tuple[str, dict]]:
        """(name, provenance for ``member.json``) of each extra member, with its weights in
        ``model`` until the next one; the SWA member's batch-norm statistics are recomputed
        over ``pixels`` (the un-augmented training images at the member's size)."""
        for snap in sorted(self.snapshots, key=lambda s: s["cycle"]):
            model.load_weights(self.directory / snap["file"])
            keys = ("stage", "cycle", "of", "epoch")
            yield (
                f"{self.run_name}.snap{snap['cycle']}",
                {"snapshot": {"run": self.run_name, **{k: snap[k] for k in keys}}},
            )
        if self.average is not None:
            stage = next(s for s in self.stages if s.swa is not None)
            batches = averaged_into(
                model, self.average, stage, pixels, batch_size=batch_size, seed=seed
            )
            swa = {
                "run": self.run_name,
                "stage": stage.name,
                "epochs": list(self.average.epochs),
                "batchnorm_batches": batches,
            }
            yield f"{self.run_name}.swa", {"swa": swa}
