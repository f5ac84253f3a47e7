"""Any ``--data`` spec: one source (:mod:`zoo.data.sources`) or several joined
(:mod:`zoo.data.combined`)."""

from __future__ import annotations

from pathlib import Path

from zoo.data.combined import is_combined, load_combined
from zoo.data.dataset import Dataset
from zoo.data.sources import load_source
from zoo.errors import ZooError


def load_dataset(spec: str | None, *, workspace: Path, images: Path | None = None) -> Dataset:
    """Read the data set named by a ``--data`` spec (``None`` means the demo set)."""
    if is_combined(spec):
        return load_combined(spec, workspace=workspace, images=images)
    return load_source(spec, workspace=workspace, images=images)


def load_training_data(
    source: str | None, *, workspace: Path, owner: str, needed_for: str, hint: str = ""
):
    """The data set ``owner`` (a member or ensemble) was trained on, from its recorded
    ``source`` spec, or a one-line ZooError saying what needed it and ``hint``."""
    try:
        return load_dataset(source, workspace=workspace)
    except ZooError as exc:
        raise ZooError(
            f"{needed_for} needs the training images of {owner}, and its data {source!r} cannot "
            f"be read ({exc}){'; ' + hint if hint else ''}."
        ) from None
