"""The records of one training run: what was asked, what it resolved to, how far it got.

``TrainOptions`` is what ``zoo train`` was asked; :func:`zoo.training.resolve.resolve_run`
turns it into a frozen ``ResolvedRun`` (recipe, data, split, name, directory, pixels) without
touching the options it was given. ``Run`` is the one record that changes while training: the
history, the best epoch, the time spent; the trainer's checkpoint updates it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.data import Dataset
from zoo.data.combined import source_weights
from zoo.data.duplicates import ImageHashes
from zoo.data.images import ImageTable
from zoo.data.metadata import MetadataEncoding
from zoo.data.splits import Split
from zoo.recipes.recipe import Recipe
from zoo.training.extra_members import ExtraMembers
from zoo.training.partition import Plan


@dataclass
class TrainOptions:
    """What ``zoo train`` was asked to do (``None`` = the recipe's or the data set's default)."""

    recipe: str
    workspace: Path
    data: str | None = None
    images: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    crop_borders: bool | None = None
    weights: str | None = None
    seed: int = 0
    split_seed: int = 0
    fold: int | None = None
    folds: int | None = None
    name: str | None = None
    resume: bool = False
    mixed_precision: bool = False
    strategy: str = "default"
    jit_compile: str = "auto"
    feature_cache: bool = True
    settings: tuple[str, ...] = ()  # --set KEY=VALUE, applied to the recipe in order
    partition: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["workspace"] = str(self.workspace)
        return data


@dataclass(frozen=True)
class ResolvedRun:
    """Everything one training run needs, checked and fixed before a model is built."""

    options: TrainOptions  # as resolved: the data set's defaults and a resumed run's options in
    recipe: Recipe
    dataset: Dataset
    split: Split
    name: str
    weights: str  # as asked or resumed; building the model says which weights it used
    directory: Path
    pixels: ImageTable | None = None
    hashes: ImageHashes | None = None
    duplicates: dict | None = None
    plan: Plan | None = None  # --partition: training classes of a taxonomy
    source: Dataset | None = None  # the data as read (fine labels), when ``plan`` relabels it
    state: dict | None = None  # state.json of the interrupted run that --resume continues
    metadata: MetadataEncoding | None = None  # the metadata the head reads, when it reads any

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    def labels(self, part: str) -> np.ndarray:
        return self.dataset.subset(self.split.ids(part)).labels

    def metadata_inputs(self, ids) -> np.ndarray | None:
        """The encoded metadata of ``ids`` (the model's ``metadata`` input), or None."""
        if self.metadata is None:
            return None
        return self.metadata.encode(self.dataset.metadata(ids))

    def source_weights(self) -> np.ndarray | None:
        """Each training image's source weight (data TOML ``weight``), or None when all are 1."""
        weights = source_weights(self.dataset)
        return None if weights is None else weights.loc[list(self.split.train)].to_numpy()


@dataclass(frozen=True)
class ClassBalance:
    """How the training split's classes weigh: counts, the loss's class weights, each training
    image's source weight, and the effective priors that prior correction divides out."""

    counts: np.ndarray
    class_weights: np.ndarray
    image_weights: np.ndarray | None
    priors: np.ndarray


@dataclass
class Run:
    """A run in training: its resolved setup and what training has done so far.

    The only mutable record of a run: :meth:`record_epoch` adds each validated epoch, and
    ``resized`` caches the pixels of stages trained at their own image size."""

    setup: ResolvedRun
    weights: str  # the weights the model was built from (``auto`` resolved)
    replicas: int = 1
    precision: str = "float32"
    extras: ExtraMembers | None = None  # snapshots and SWA: members besides the run's own
    history: list = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -1.0
    epochs_since_best: int = 0
    seconds: float = 0.0
    resized: dict = field(default_factory=dict)  # image size → pixels of stages at that size

    @staticmethod
    def progress_of(state: dict | None) -> dict:
        """The progress an interrupted run's ``state.json`` records, as keywords of ``Run``."""
        keys = ("history", "best_epoch", "best_score", "epochs_since_best", "seconds")
        return {} if state is None else {key: state[key] for key in keys}

    def record_epoch(self, row: dict, *, is_best: bool, epoch: int) -> None:
        """Add a validated epoch: its history row, the best epoch so far, the time spent."""
        self.history.append(row)
        if is_best:
            self.best_epoch, self.best_score = epoch, row["val_balanced_accuracy"]
            self.epochs_since_best = 0
        else:
            self.epochs_since_best += 1
        self.seconds += row["seconds"]
