"""The feature-space out-of-distribution score of a target, and the threshold that flags images.

Each member's :class:`~zoo.inference.ood.FeatureDensity` is fitted on the last hidden layer of its own
training images, once, and kept with the scores of its validation images in
``<workspace>/cache/ood/<member>-<model sha256[:12]>.npz`` (deletable; refitted when
``model.keras`` changes). A target's score is the weighted mean of its members' scores (an
ensemble's weights; equal weights for rules without them). An image is flagged when its score
falls below the threshold that keeps 95 % of the target's validation images: chosen on
validation, never on the images being judged.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo import console
from zoo.errors import ZooError
from zoo.inference.ood import RECALL, FeatureDensity, in_distribution_threshold
from zoo.store import Layout
from zoo.store.workspace import atomic_write_bytes

SCORE = "mahalanobis"


@dataclass(frozen=True)
class FittedMember:
    """One member's density and the scores of its validation images."""

    member: object
    density: FeatureDensity
    val_ids: np.ndarray
    val_scores: np.ndarray


def cache_file(member, workspace: Path) -> Path:
    from zoo.inference.target import model_sha256

    return Layout(workspace).cache / "ood" / f"{member.name}-{model_sha256(member)[:12]}.npz"


def fitted_member(member, *, workspace: Path) -> FittedMember:
    """The member's density, from the cache or fitted on its training images now (one pass
    over its training and validation images); a ZooError when they cannot be read."""
    file = cache_file(member, workspace)
    if file.is_file():
        with np.load(file, allow_pickle=False) as arrays:
            return FittedMember(
                member, FeatureDensity.from_arrays(arrays), arrays["val_ids"], arrays["val_scores"]
            )
    from zoo.data import load_training_data
    from zoo.inference.embedding import member_features

    source = member.info["data"].get("source")
    dataset = load_training_data(
        source, workspace=workspace, owner=member.name, needed_for=f"the {SCORE} OOD score"
    )
    known = dataset.records.index
    train = [i for i in member.split_ids("train") if i in known]
    val = [i for i in member.split_ids("val") if i in known]
    if len(train) < 2 or not val:
        raise ZooError(
            f"the {SCORE} OOD score of {member.name} needs its training and validation images; "
            f"{source} holds {len(train)} and {len(val)} of them"
        )
    console.info(
        f"  fitting the {SCORE} OOD score of {member.name} on {len(train)} training images"
    )
    labels = dataset.records.loc[train, "label"].astype(str).to_numpy()
    density = FeatureDensity().fit(
        member_features(member, dataset, train, workspace=workspace), labels
    )
    val_scores = density.score_samples(member_features(member, dataset, val, workspace=workspace))
    buffer = io.BytesIO()
    np.savez(
        buffer, val_ids=np.asarray(val, dtype=str), val_scores=val_scores, **density.to_arrays()
    )
    atomic_write_bytes(file, buffer.getvalue())
    return FittedMember(member, density, np.asarray(val, dtype=str), val_scores)


def member_weights(target) -> list[tuple[object, float]]:
    """``(member, weight)`` of a target's members with weight above 0."""
    if target.kind == "member":
        return [(target.member, 1.0)]
    weights = getattr(target.combiner, "weights_", None)
    if weights is None or len(weights) != len(target.members):
        weights = np.full(len(target.members), 1.0 / len(target.members))
    return [(m, float(w)) for m, w in zip(target.members, weights, strict=True) if float(w) > 0]


class TargetDensity:
    """The fitted members of a target: scores for data-set images and for decoded files."""

    def __init__(self, target, *, workspace: Path):
        self.target = target
        self.parts = [(fitted_member(m, workspace=workspace), w) for m, w in member_weights(target)]
        total = sum(w for _, w in self.parts)
        self.parts = [(f, w / total) for f, w in self.parts]
        self.threshold = in_distribution_threshold(self._val_scores(), recall=RECALL)

    def _val_scores(self) -> np.ndarray:
        shared = set.intersection(*(set(f.val_ids.tolist()) for f, _ in self.parts))
        ids = sorted(shared)
        if not ids:
            raise ZooError(f"{self.target.name}: its members share no validation image")
        total = np.zeros(len(ids))
        for fitted, weight in self.parts:
            position = {i: n for n, i in enumerate(fitted.val_ids.tolist())}
            total += weight * fitted.val_scores[[position[i] for i in ids]]
        return total

    def dataset_scores(self, dataset, ids: Sequence[str], *, workspace: Path) -> np.ndarray:
        from zoo.inference.embedding import member_features

        total = np.zeros(len(ids))
        for fitted, weight in self.parts:
            features = member_features(fitted.member, dataset, ids, workspace=workspace)
            total += weight * fitted.density.score_samples(features)
        return total

    def file_scores(self, images: Sequence) -> np.ndarray:
        """Scores of image files or images in memory (as :func:`zoo.inference.target.decode_files`
        takes them)."""
        from zoo.inference.embedding import pixel_features
        from zoo.inference.target import decode_files

        total = np.zeros(len(images))
        for fitted, weight in self.parts:
            pixels = decode_files(images, fitted.member)
            total += weight * fitted.density.score_samples(pixel_features(fitted.member, pixels))
        return total


def target_density(target, *, workspace: Path) -> TargetDensity | str:
    """The target's :class:`TargetDensity`, or a note saying why there is none."""
    try:
        return TargetDensity(target, workspace=workspace)
    except ZooError as exc:
        return f"no {SCORE} OOD score: {exc}"
