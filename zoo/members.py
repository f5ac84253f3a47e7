"""Saved members: loading, listing, prediction CSVs and the model card.

``<workspace>/members/<name>/`` holds ``model.keras`` (loads with ``safe_mode=True``),
``member.json`` (resolved recipe and options, classes, priors, input spec, data
fingerprint, split ids, versions, timings, metrics), ``predictions/<split>.csv`` (raw
softmax in ISIC format; TTA variants beside them), ``history.csv`` and ``card.md``; every
file and key is described in ``docs/formats.md``.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.errors import ZooError
from zoo.workspace import atomic_write_csv

MEMBER_FILE = "member.json"


def library_versions() -> dict[str, str]:
    import keras
    import sklearn
    import tensorflow as tf

    import zoo

    return {
        "zoo": zoo.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def predictions_frame(ids, probabilities: np.ndarray, classes) -> pd.DataFrame:
    """Class probabilities in ISIC format: index ``image``, one column per class."""
    return pd.DataFrame(
        np.asarray(probabilities, dtype=float),
        index=pd.Index(list(ids), name="image"),
        columns=list(classes),
    )


def write_predictions(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_csv(path, frame, float_format="%.8g")


def read_predictions(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"image": str}).set_index("image")
    return frame.astype(float)


@dataclass
class Member:
    """A trained member on disk."""

    path: Path

    @cached_property
    def info(self) -> dict:
        file = self.path / MEMBER_FILE
        try:
            return json.loads(file.read_text())
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
            raise ZooError(
                f"{file} is missing or unreadable ({exc}); the member is damaged — retrain it."
            ) from None

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def image_size(self) -> int:
        return int(self.info["input"]["size"])

    @property
    def input(self) -> dict:
        return dict(self.info["input"])

    @property
    def effective_priors(self) -> np.ndarray:
        return np.asarray(self.info["priors"]["effective"], dtype=float)

    def split_ids(self, part: str) -> list[str]:
        return list(self.info["split"]["ids"][part])

    def load_model(self):
        """The Keras model, loaded safely (no arbitrary code)."""
        import keras

        import zoo.augment  # noqa: F401  registers zoo's serializable layers
        import zoo.models.layers  # noqa: F401
        import zoo.training.finetune  # noqa: F401  registers the discriminative optimizers

        return keras.saving.load_model(self.path / "model.keras", safe_mode=True)

    def predictions_file(self, key: str) -> Path:
        return self.path / "predictions" / f"{key}.csv"


def members_dir(workspace: Path) -> Path:
    return Path(workspace) / "members"


def list_members(workspace: Path) -> list[Member]:
    """Every complete member in the workspace, by name."""
    folder = members_dir(workspace)
    if not folder.is_dir():
        return []
    return [
        Member(p)
        for p in sorted(folder.iterdir())
        if (p / MEMBER_FILE).is_file() and not p.name.startswith(".")
    ]


def model_card(info: dict) -> str:
    """``card.md``: what the member is, how it was trained, how it scores, what it is for."""
    data, training, metrics = info["data"], info["training"], info.get("metrics", {})
    counts = ", ".join(f"{c} {n}" for c, n in data["class_counts"].items())
    lines = [
        f"# {info['name']}",
        "",
        f"Recipe `{info['recipe']}` ({info['config']['recipe']['source']}), backbone "
        f"{info['config']['recipe']['backbone']}, input {info['input']['size']} px, weights {info['weights']}.",
        "",
        "## Intended use",
        "Research on skin-lesion classification and ensembling. **Not for diagnosis**: it has not been "
        "validated clinically, and its scores on one data set do not carry over to other populations, "
        "devices or clinics.",
        "",
        "## Data",
        f"- Source: `{data['source']}`{' (synthetic demo data)' if data.get('demo') else ''}",
        f"- {data['count']} images, fingerprint `{data['fingerprint']}`; classes: {counts}",
        f"- Split (lesion-grouped, stratified, seed {info['split']['seed']}): "
        + ", ".join(f"{p} {len(info['split']['ids'][p])}" for p in ("train", "val", "test")),
        "",
        "## Training",
        f"- {training['epochs_run']} epochs in {training['seconds']:.0f} s, best epoch {training['best_epoch']} "
        f"(by validation balanced accuracy), seed {info['config']['options']['seed']}",
        f"- Class weighting `{info['config']['recipe']['class_weight']}`, sampling `{info['config']['recipe']['sampling']}`; "
        "effective training priors: "
        + ", ".join(
            f"{c} {p:.3f}"
            for c, p in zip(info["classes"], info["priors"]["effective"], strict=True)
        ),
        "",
        "## Metrics (raw softmax, no TTA, no prior correction)",
        "| split | balanced accuracy | macro AUC | accuracy |",
        "|---|---|---|---|",
    ]
    for split, m in metrics.items():
        auc = "–" if m.get("macro_auc") is None else f"{m['macro_auc']:.3f}"
        lines.append(f"| {split} | {m['balanced_accuracy']:.3f} | {auc} | {m['accuracy']:.3f} |")
    lines += [
        "",
        f"Library versions: {', '.join(f'{k} {v}' for k, v in info['versions'].items())}.",
        "",
    ]
    return "\n".join(lines)
