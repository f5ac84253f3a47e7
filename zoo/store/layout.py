"""The workspace layout: the one place that knows where zoo keeps each kind of file.

```
<workspace>/members/<name>/         member.json, model.keras, predictions/, history.csv, card.md
<workspace>/ensembles/<name>/       ensemble.json, predictions/, card.md
<workspace>/evaluations/<name>/     metrics.json, truth.csv, predictions.csv, …
<workspace>/runs/<name>/            training in progress
<workspace>/cache/                  images/, labels/, parameters.json (deletable)
<workspace>/leaderboard/            zoo leaderboard without --out
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MEMBER_FILE = "member.json"
MODEL_FILE = "model.keras"
TRAIN_HASHES_FILE = "train_hashes.npy"  # perceptual hashes of a member's training images
ENSEMBLE_FILE = "ensemble.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FOLDER = "predictions"


@dataclass(frozen=True)
class Layout:
    """Paths inside one workspace folder (nothing is created here)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of_item(cls, folder: str | Path) -> Layout:
        """The workspace that holds ``members/<name>`` or ``ensembles/<name>`` ``folder``."""
        return cls(Path(folder).resolve().parents[1])

    @property
    def members(self) -> Path:
        return self.root / "members"

    def member(self, name: str) -> Path:
        return self.members / name

    @property
    def ensembles(self) -> Path:
        return self.root / "ensembles"

    def ensemble(self, name: str) -> Path:
        return self.ensembles / name

    @property
    def evaluations(self) -> Path:
        return self.root / "evaluations"

    def evaluation(self, name: str) -> Path:
        return self.evaluations / name

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, name: str) -> Path:
        return self.runs / name

    @property
    def leaderboard(self) -> Path:
        return self.root / "leaderboard"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def image_cache(self) -> Path:
        return self.cache / "images"

    def labels_cache(self, fingerprint: str) -> Path:
        return self.cache / "labels" / f"{fingerprint}.csv"

    @property
    def parameters_cache(self) -> Path:
        return self.cache / "parameters.json"

    def member_folders(self) -> list[Path]:
        """Every complete member folder (one holding ``member.json``), by name."""
        return _items(self.members, MEMBER_FILE)

    def ensemble_folders(self) -> list[Path]:
        """Every built ensemble folder (one holding ``ensemble.json``), by name."""
        return _items(self.ensembles, ENSEMBLE_FILE)

    def metrics_files(self) -> list[Path]:
        """``metrics.json`` of every finished evaluation, by folder name."""
        return [folder / METRICS_FILE for folder in _items(self.evaluations, METRICS_FILE)]


def _items(folder: Path, marker: str) -> list[Path]:
    """Sub-folders holding ``marker``; names starting with ``.`` are being written."""
    if not folder.is_dir():
        return []
    return [
        p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and (p / marker).is_file()
    ]


def predictions_file(folder: str | Path, key: str) -> Path:
    """A member's or ensemble's ``predictions/<key>.csv``."""
    return Path(folder) / PREDICTIONS_FOLDER / f"{key}.csv"


def sidecar_file(folder: str | Path, key: str) -> Path:
    """The record beside a cached prediction CSV: ``predictions/<key>.json``."""
    return Path(folder) / PREDICTIONS_FOLDER / f"{key}.json"
