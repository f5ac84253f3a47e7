"""TARGET: what ``evaluate`` and ``predict`` score — a saved member or a built ensemble.

Both kinds answer the same questions (:class:`Target`), so the commands never ask which one
they hold. ``resolve_target`` finds a name or a directory among members, then ensembles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd

from zoo.data import Dataset


@runtime_checkable
class Target(Protocol):
    """A scorable model: a member or an ensemble."""

    name: str
    kind: str  # "member" or "ensemble"
    path: Path

    @property
    def classes(self) -> list[str]: ...

    @property
    def data_info(self) -> dict:
        """``member.json``'s ``data`` block of the training data (source, fingerprint, …)."""
        ...

    def split_ids(self, part: str) -> list[str]:
        """Image ids of ``train``/``val``/``test`` of the training data's recorded split."""
        ...

    @property
    def default_tta(self) -> str: ...

    @property
    def default_prior_correction(self) -> bool: ...

    @property
    def operating_point(self):
        """A :class:`zoo.scoring.operating_points.StoredOperatingPoint` stored with the target, or None."""
        ...

    def probabilities(
        self,
        dataset: Dataset,
        ids: Sequence[str],
        *,
        tta: str,
        prior_correction: bool,
        workspace: Path,
    ) -> pd.DataFrame:
        """Class probabilities (index ``image``, columns = classes) for ``ids`` of ``dataset``:
        TTA first, prior correction second; cached where possible."""
        ...

    def predict_files(
        self,
        paths: Sequence[Path],
        *,
        tta: str,
        prior_correction: bool,
        metadata: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Class probabilities for image files outside any data set (index = file stem); also
        for images in memory (file objects, PIL images, uint8 arrays: ``image<position>``).
        ``metadata`` (age, sex, site by image name) goes to members that read it."""
        ...


def resolve_target(target: str, workspace: Path) -> Target:
    """A member or an ensemble by name or directory; unknown names list close matches."""
    from zoo.errors import ZooError, close_matches
    from zoo.store import ENSEMBLE_FILE, MEMBER_FILE, Layout

    layout = Layout(workspace)
    for candidate in (Path(target), layout.member(target), layout.ensemble(target)):
        if (candidate / MEMBER_FILE).is_file():
            from zoo.inference.target import MemberTarget

            return MemberTarget.from_path(candidate)
        if (candidate / ENSEMBLE_FILE).is_file():
            from zoo.ensembles.target import EnsembleTarget

            return EnsembleTarget.from_path(candidate, workspace=workspace)
    names = [p.name for p in layout.member_folders() + layout.ensemble_folders()]
    hint = (
        close_matches(target, names) if names else " There are no members yet: run zoo train first."
    )
    raise ZooError(f"no member or ensemble {target!r} in {workspace}.{hint}")
