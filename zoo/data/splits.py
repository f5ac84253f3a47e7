"""Leak-free splits: stratified by class, grouped by lesion, seeded, recorded in members.

The test part (20 % by default) depends only on the data and the split seed, so every member
trained on the same data shares it and can join one ensemble. The rest is divided into
train and validation (70/10 overall), or into ``folds`` folds of which ``fold`` validates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from zoo.data.dataset import Dataset
from zoo.errors import DataProblems, ZooError

PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Image ids of each part, and how they were drawn."""

    seed: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    fold: int | None = None
    folds: int | None = None
    test_fraction: float = 0.2
    val_fraction: float = 0.1

    def ids(self, part: str) -> tuple[str, ...]:
        if part not in PARTS:
            raise ZooError(f"unknown split {part!r}; expected one of {', '.join(PARTS)} or all.")
        return getattr(self, part)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ids"] = {p: list(data.pop(p)) for p in PARTS}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Split:
        data = dict(data)
        ids = data.pop("ids")
        return cls(**data, **{p: tuple(ids[p]) for p in PARTS})


def _one_fold(labels, groups, n_splits: int, seed: int, which: int, *, source: str):
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    try:
        for k, (rest, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            if k == which:
                return rest, held
    except ValueError as exc:  # e.g. fewer lesions than n_splits
        raise DataProblems(
            source,
            [
                f"cannot divide {len(labels)} images into {n_splits} stratified, lesion-grouped "
                f"parts ({exc}); add images or use fewer folds"
            ],
        ) from None
    raise AssertionError("unreachable")


def lesion_shortfalls(dataset: Dataset, *, folds: int | None = None) -> list[str]:
    """One line per class with too few lesions (groups) for the split, naming it; [] if none.

    A grouped split puts every lesion in one part, so each class needs a lesion in each of
    train, val and test (three), or in each of ``folds`` folds.
    """
    needed = max(3, folds or 0)
    why = "a train/val/test split" if folds is None else f"{folds} folds plus a test part"
    records = dataset.records
    lesions = records.groupby("label")["group"].nunique()
    images = records["label"].value_counts()
    return [
        f"class {c} has {int(lesions.get(c, 0))} lesion(s) ({int(images.get(c, 0))} image(s)), "
        f"fewer than the {needed} that {why} needs; add images of it or drop the class"
        for c in dataset.classes
        if lesions.get(c, 0) < needed
    ]


def check_split_options(*, fold: int | None, folds: int | None, test_fraction: float = 0.2) -> None:
    """Raise :class:`ZooError` for impossible ``--fold``/``--folds`` or test fraction."""
    if folds is not None and (folds < 2 or fold is None or not 0 <= fold < folds):
        raise ZooError(
            f"--fold K --folds N needs N ≥ 2 and 0 ≤ K < N; got fold={fold}, folds={folds}."
        )
    if fold is not None and folds is None:
        raise ZooError(f"--fold needs --folds N as well; got --fold {fold} alone.")
    if not 0 < test_fraction < 0.5:
        raise ZooError(f"test fraction must be in (0, 0.5); got {test_fraction}.")


def make_split(
    dataset: Dataset,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    fold: int | None = None,
    folds: int | None = None,
) -> Split:
    """Grouped, stratified train/val/test (or k-fold) split of ``dataset``.

    Bad options raise :class:`ZooError`; a data set that cannot be split so raises
    :class:`DataProblems` with one line per class that is short of lesions.
    """
    check_split_options(fold=fold, folds=folds, test_fraction=test_fraction)
    short = lesion_shortfalls(dataset, folds=folds)
    if short:
        raise DataProblems(dataset.spec, short)
    labels, groups, ids = (
        dataset.labels,
        dataset.records["group"].to_numpy(),
        np.asarray(dataset.ids),
    )
    source = dataset.spec
    rest, test = _one_fold(labels, groups, round(1 / test_fraction), seed, 0, source=source)
    if folds is None:
        inner = max(2, round((1 - test_fraction) / val_fraction))
        train, val = _one_fold(labels[rest], groups[rest], inner, seed, 0, source=source)
    else:
        train, val = _one_fold(labels[rest], groups[rest], folds, seed, fold, source=source)
    split = Split(
        seed=seed,
        train=tuple(ids[rest][train]),
        val=tuple(ids[rest][val]),
        test=tuple(ids[test]),
        fold=fold,
        folds=folds,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
    )
    present = {p: set(dataset.records.loc[list(split.ids(p)), "label"]) for p in PARTS}
    empty = [
        f"the {part} part of the split (seed {seed}) has no image of class(es) "
        f"{', '.join(missing)}: too few lesions for a grouped split; add images of them, "
        "drop those classes or try another --split-seed"
        for part in PARTS
        if (missing := [c for c in dataset.classes if c not in present[part]])
    ]
    if empty:
        raise DataProblems(dataset.spec, empty)
    return split


def keep_together(split: Split, groups) -> Split:
    """``split`` with the images of each of ``groups`` (a Series: image id → group, e.g.
    lesions joined through duplicate images) in one part: test if any of them is in test,
    else val, else train. The split is drawn on the data's own lesions first, so data whose
    duplicates never join two lesions splits exactly as without this step, and the test part
    still depends only on the data and the seed."""
    part_of = {i: p for p in PARTS for i in split.ids(p)}
    ids = list(part_of)
    rank = {"test": 0, "val": 1, "train": 2}
    frame = pd.DataFrame({"group": groups.loc[ids].to_numpy(), "part": [part_of[i] for i in ids]})
    target = frame.groupby("group")["part"].agg(lambda parts: min(parts, key=rank.__getitem__))
    moved = dict(zip(ids, frame["group"].map(target), strict=True))
    if all(moved[i] == part_of[i] for i in ids):
        return split
    parts = {p: [i for i in split.ids(p) if moved[i] == p] for p in PARTS}
    for p in PARTS:  # images moved in come after the part's own, in their former order
        parts[p] += [i for q in PARTS if q != p for i in split.ids(q) if moved[i] == p]
    return dataclasses.replace(split, **{p: tuple(parts[p]) for p in PARTS})
