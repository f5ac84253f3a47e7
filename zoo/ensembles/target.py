"""A built ensemble as a TARGET (:class:`zoo.ensembles.targets.Target`): ``evaluate`` and ``predict`` on it.

An ensemble runs only on the exact members it was built from: opening one checks that
every member is present and that the sha256 of its ``model.keras`` and ``member.json``
match the recorded ones, and refuses otherwise (rebuild the ensemble).

Probabilities: each member's raw probabilities with the chosen TTA
(:func:`zoo.inference.target.member_probabilities`, cached per member), prior-corrected per member
if asked, then combined by the stored, fitted combiner. The build's own validation and test
predictions are reused when the data, images, TTA and prior correction are the build's.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from zoo.ensembles.build import correct_priors
from zoo.ensembles.combine import Combiner, PredictionSet, combiner_from_dict
from zoo.errors import ZooError
from zoo.inference.members import Member
from zoo.store import (
    ENSEMBLE_FILE,
    MEMBER_FILE,
    EnsembleRecord,
    Layout,
    member_hashes,
    predictions_file,
    read_predictions,
    tta_name,
)
from zoo.store.files import damaged

if TYPE_CHECKING:
    from zoo.data import Dataset

__all__ = ["EnsembleTarget"]

# Rules whose prediction is the weights_-weighted mean of (a transform of) each member:
# a member with weight 0 contributes nothing, so its model need not run.


class EnsembleTarget:
    """A built ensemble in ``<workspace>/ensembles/<name>/``; open it with :meth:`from_path`."""

    kind = "ensemble"

    def __init__(self, *, path: Path, record: EnsembleRecord, members: list[Member]):
        self.path = Path(path)
        self.record = record
        self.info = record.to_dict()
        self.name = record.name
        self.members = members

    @classmethod
    def from_path(cls, path: str | Path, *, workspace: Path, verify: bool = True) -> EnsembleTarget:
        """Open a built ensemble; refuses (ZooError) when a member is missing or has changed."""
        path = Path(path)
        file = path / ENSEMBLE_FILE
        record = EnsembleRecord.load(file)
        members = [
            cls._locate(name, record, path=path, workspace=Path(workspace))
            for name in record.member_names
        ]
        target = cls(path=path, record=record, members=members)
        _check_combiner(target, file)
        if verify:
            target.verify()
        return target

    @staticmethod
    def _locate(name: str, record: EnsembleRecord, *, path: Path, workspace: Path) -> Member:
        candidates = [Layout(workspace).member(name), Layout.of_item(path).member(name)]
        for candidate in dict.fromkeys(candidates):
            if (candidate / MEMBER_FILE).is_file():
                return Member(candidate)
        raise ZooError(
            f"ensemble {record.name}: member {name} is missing from {Layout(workspace).members}; "
            f"restore it, or rebuild the ensemble with `zoo ensemble build {record.spec_hint}`"
        )

    def verify(self) -> None:
        """Every member's ``model.keras`` and ``member.json`` still hash to the recorded values."""
        for record, member in zip(self.record.members, self.members, strict=True):
            try:
                current = member_hashes(member.path)
            except ZooError as exc:
                raise ZooError(
                    f"ensemble {self.name}: {exc}, or rebuild the ensemble with "
                    f"`zoo ensemble build {self.record.spec_hint}`"
                ) from None
            for file, recorded in record["sha256"].items():
                if current.get(file) != recorded:
                    raise ZooError(
                        f"ensemble {self.name}: member {record['name']} has changed since the "
                        f"ensemble was built ({file} sha256 {current.get(file, 'missing')[:12]}… "
                        f"≠ recorded {recorded[:12]}…); rebuild the ensemble with "
                        f"`zoo ensemble build {self.record.spec_hint}`"
                    )

    # --- Target protocol ---------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return list(self.record.classes)

    @property
    def data_info(self) -> dict:
        return dict(self.record.data)

    def split_ids(self, part: str) -> list[str]:
        """Test and val: the ids the members share; train: every id any member trained on."""
        if part in ("test", "val"):
            return list(self.record.split["ids"][part])
        if part == "train":
            seen: dict[str, None] = {}
            for member in self.members:
                seen.update(dict.fromkeys(member.split_ids("train")))
            return list(seen)
        raise ZooError(f"unknown split part {part!r}; choose train, val or test")

    @property
    def default_tta(self) -> str:
        return self.record.tta

    @property
    def default_prior_correction(self) -> bool:
        return self.record.prior_correction

    @property
    def operating_point(self):
        """The :class:`~zoo.scoring.operating_points.StoredOperatingPoint` chosen at build time, or None."""
        from zoo.scoring.operating_points import StoredOperatingPoint

        return StoredOperatingPoint.from_dict(self.info.get("operating_point"))

    @cached_property
    def combiner(self) -> Combiner:
        return combiner_from_dict(self.record.combiner)

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.record.weights)

    def probabilities(
        self,
        dataset: Dataset,
        ids: Sequence[str],
        *,
        tta: str,
        prior_correction: bool,
        workspace: Path,
    ) -> pd.DataFrame:
        """Ensemble probabilities (index ``image``, columns = classes) for ``ids`` of ``dataset``."""
        ids = [str(i) for i in ids]
        stored = self._stored(dataset, ids, tta=tta, prior_correction=prior_correction)
        if stored is not None:
            return stored
        from zoo.inference.target import member_probabilities

        runs: list[dict] = []

        def member_output(member: Member) -> pd.DataFrame:
            frame = member_probabilities(member, dataset, ids, tta=tta, workspace=workspace)
            runs.append(dict(frame.attrs.get("inference") or {}))
            return frame

        stacked = self._member_stack(member_output, ids, prior_correction=prior_correction)
        out = self._combine(stacked, ids)
        seconds = [r["seconds"] for r in runs if not r.get("cached") and r.get("seconds")]
        out.attrs["inference"] = {
            "cached": all(r.get("cached", False) for r in runs),
            "seconds": sum(seconds) if seconds else None,
            "members_run": len(runs),
        }
        return out

    def predict_files(
        self,
        paths: Sequence[Path],
        *,
        tta: str,
        prior_correction: bool,
        metadata: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Ensemble probabilities for image files (index = file stem, as the members give it);
        ``metadata`` goes to the members that read it."""
        from zoo.inference.target import MemberTarget

        index: list[pd.Index] = []

        def member_output(member: Member) -> pd.DataFrame:
            frame = MemberTarget.from_path(member.path).predict_files(
                paths, tta=tta, prior_correction=False, metadata=metadata
            )
            if not index:
                index.append(frame.index)
            elif len(frame) != len(index[0]):
                raise ZooError(
                    f"member {member.path.name} predicted {len(frame)} images but another member "
                    f"{len(index[0])} for the same files; check that the files are readable"
                )
            return frame.set_axis(index[0])

        stacked = self._member_stack(member_output, None, prior_correction=prior_correction)
        return self._combine(stacked, [str(i) for i in index[0]], name=index[0].name or "image")

    # --- internals ---------------------------------------------------------------------------

    def _stored(self, dataset, ids: list[str], *, tta: str, prior_correction: bool):
        """The build's own predictions, when they answer exactly this question."""
        if tta_name(tta) != tta_name(self.default_tta):
            return None
        if bool(prior_correction) != self.default_prior_correction:
            return None
        wanted = set(ids)
        for part in ("test", "val"):
            stored_ids = self.record.split["ids"][part]
            file = predictions_file(self.path, part)
            if len(stored_ids) != len(ids) or set(stored_ids) != wanted or not file.is_file():
                continue
            if dataset.fingerprint != self.record.data.get("fingerprint"):
                return None
            out = read_predictions(file).loc[ids]
            out.attrs["inference"] = {"cached": True, "key": f"ensemble {part}"}
            return out
        return None

    def _member_stack(self, member_output, ids, *, prior_correction: bool) -> np.ndarray:
        """(members, images, classes): each member's output, prior-corrected if asked.

        Rows follow ``ids``; with ``ids=None`` they are taken in the order given.

        Members with weight 0 in a weighted-mean rule are not run (their rows are uniform
        placeholders that the combiner multiplies by 0).
        """
        weights = np.asarray(self.combiner.weights_, dtype=float)
        skip = type(self.combiner).skips_zero_weights
        runs = [not (skip and w == 0) for w in weights]
        outputs: list[np.ndarray | None] = []
        for member, run in zip(self.members, runs, strict=True):
            if not run:
                outputs.append(None)
                continue
            frame = member_output(member)
            values = self._check_frame(frame, member, ids)
            if prior_correction:
                values = correct_priors(member, values)
            outputs.append(values)
        shape = next(o for o in outputs if o is not None).shape
        placeholder = np.full(shape, 1.0 / shape[1])
        return np.stack([placeholder if o is None else o for o in outputs])

    def _check_frame(self, frame: pd.DataFrame, member: Member, ids) -> np.ndarray:
        columns = [str(c) for c in frame.columns]
        if columns != self.classes:
            raise ZooError(
                f"member {member.path.name} gives classes {columns} but ensemble {self.name} "
                f"was built with {self.classes}; rebuild the ensemble"
            )
        if ids is None:
            return frame.to_numpy(dtype=np.float64)
        index = frame.index.astype(str)
        if not (len(index) == len(ids) and (index == pd.Index(ids)).all()):
            frame = frame.set_axis(index)
            missing = pd.Index(ids).difference(index)
            if len(missing):
                raise ZooError(
                    f"member {member.path.name} returned no probabilities for {len(missing)} "
                    f"image(s) (e.g. {', '.join(map(str, missing[:3]))}); check the data set"
                )
            frame = frame.loc[ids]
        return frame.to_numpy(dtype=np.float64)

    def _combine(self, stacked: np.ndarray, ids: list[str], name: str = "image") -> pd.DataFrame:
        prediction_set = PredictionSet(
            split="predict",
            ids=tuple(ids),
            classes=tuple(self.classes),
            members=tuple(self.combiner.members_),
            probabilities=stacked,
        )
        out = self.combiner.predict(prediction_set)
        _check_output(out, self.path / ENSEMBLE_FILE)
        return pd.DataFrame(out, index=pd.Index(ids, name=name), columns=self.classes)

    def __repr__(self) -> str:
        return (
            f"EnsembleTarget({self.name!r}, rule={self.record.rule!r}, members={len(self.members)})"
        )


def _damaged(file: Path, reason: str) -> ZooError:
    return damaged(file, reason, EnsembleRecord.REMEDY)


def _check_combiner(target: EnsembleTarget, file: Path) -> None:
    """The stored combiner rebuilds, and its weights are finite, non-negative, one per member."""
    try:
        combiner = target.combiner
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _damaged(file, f"its 'combiner' cannot be rebuilt: {exc!r}") from None
    weights = np.asarray(getattr(combiner, "weights_", []), dtype=object)
    try:
        weights = weights.astype(float)
    except (TypeError, ValueError):
        raise _damaged(file, f"combiner weights must be numbers; got {weights.tolist()}") from None
    bad = (
        weights.ndim != 1
        or len(weights) != len(target.members)
        or not np.all(np.isfinite(weights))
        or np.any(weights < 0)
        or not weights.sum() > 0
    )
    if bad:
        raise _damaged(
            file,
            f"combiner weights must be {len(target.members)} finite, non-negative numbers that "
            f"do not all vanish; got {weights.tolist()}",
        )


def _check_output(probabilities: np.ndarray, file: Path) -> None:
    """Combined probabilities are finite, non-negative and sum to 1 in every row."""
    values = np.asarray(probabilities, dtype=float)
    ok = np.all(np.isfinite(values)) and np.all(values >= -1e-9)
    if not ok or not np.allclose(values.sum(axis=1), 1.0, atol=1e-4):
        raise _damaged(
            file,
            "its combiner gives values that are not probabilities (negative, non-finite or rows "
            "not summing to 1)",
        )
