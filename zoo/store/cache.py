"""A member's prediction cache: ``predictions/<key>.csv`` with its sidecar ``<key>.json``.

Raw probabilities (TTA averaged, before prior correction) are computed once per member, unit
of data and TTA scheme. The sidecar (:class:`CacheRecord`) records the sha256 of
``model.keras``, the sha256 of the sorted image ids and the TTA name; an entry is used only
while all three still match. The trainer writes its ``val``/``test`` entries through this
cache too.

Members written before ``format_version`` existed (``member.json`` without it) have trainer
files without a sidecar: those ``val.csv``/``test.csv`` are trusted when their ids are the
recorded ones and ``model.keras`` is not newer, and get their sidecar then.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from zoo.errors import ZooError
from zoo.store.hashes import ids_sha256
from zoo.store.layout import MODEL_FILE, predictions_file, sidecar_file
from zoo.store.names import tta_name
from zoo.store.predictions import read_predictions, write_predictions
from zoo.store.records import CacheRecord, try_load

LEGACY_TRAINER_KEYS = ("val", "test")  # written without a sidecar before format_version


class PredictionCache:
    """The cached predictions of the member in ``folder``, whose classes are ``classes``.

    ``legacy``: the member predates ``format_version`` (its trainer files have no sidecar).
    """

    def __init__(self, folder: str | Path, classes: Sequence[str], *, legacy: bool = False):
        self.folder, self.classes, self.legacy = Path(folder), [str(c) for c in classes], legacy

    def file(self, key: str) -> Path:
        return predictions_file(self.folder, key)

    def read(
        self, key: str, ids: Sequence[str], *, tta: str, model_sha256: str
    ) -> pd.DataFrame | None:
        """The cached probabilities of exactly ``ids`` under ``key`` if still valid, else None.

        ``attrs["inference"]`` holds ``cached``, ``seconds`` and ``images_per_second``.
        """
        file = self.file(key)
        if not file.is_file():
            return None
        sidecar = sidecar_file(self.folder, key)
        if not sidecar.exists():
            return self._adopt_legacy(key, ids, tta=tta, model_sha256=model_sha256)
        record, _ = try_load(CacheRecord, sidecar)
        current = (model_sha256, ids_sha256(ids), tta_name(tta))
        if record is None or (record.model_sha256, record.ids_sha256, record.tta) != current:
            return None
        frame = self._frame(file, ids)
        if frame is not None:
            frame.attrs["inference"] = {
                "cached": True,
                "seconds": record.seconds,
                "images_per_second": record.images_per_second,
            }
        return frame

    def write(
        self,
        key: str,
        frame: pd.DataFrame,
        *,
        tta: str,
        model_sha256: str,
        seconds: float | None,
        origin: str,
    ) -> pd.DataFrame:
        """Write the entry (CSV, then sidecar) and return the probabilities as stored (8
        significant digits), so that a first run and every later run see the same numbers."""
        file = write_predictions(self.file(key), frame)
        self._write_record(key, frame.index, tta, model_sha256, seconds=seconds, origin=origin)
        stored = read_predictions(file)
        stored.attrs = dict(frame.attrs)
        return stored

    def _write_record(self, key, ids, tta, model_sha256, *, seconds, origin) -> None:
        CacheRecord(
            key=key,
            model_sha256=model_sha256,
            ids_sha256=ids_sha256(ids),
            tta=tta_name(tta),
            n_images=len(ids),
            seconds=seconds,
            images_per_second=(len(ids) / seconds) if seconds else None,
            origin=origin,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        ).write(sidecar_file(self.folder, key))

    def _adopt_legacy(self, key, ids, *, tta, model_sha256) -> pd.DataFrame | None:
        """A pre-``format_version`` trainer file: trusted if ``model.keras`` is not newer."""
        if not self.legacy or key not in LEGACY_TRAINER_KEYS or tta_name(tta) != "none":
            return None
        file = self.file(key)
        if (self.folder / MODEL_FILE).stat().st_mtime_ns > file.stat().st_mtime_ns:
            return None
        frame = self._frame(file, ids)
        if frame is not None:
            with contextlib.suppress(OSError):  # read-only: trusted all the same
                self._write_record(
                    key, frame.index, tta, model_sha256, seconds=None, origin="trainer"
                )
        return frame

    def _frame(self, file: Path, ids: Sequence[str]) -> pd.DataFrame | None:
        """The CSV if it holds exactly ``ids`` (any order) and the member's classes."""
        try:
            frame = read_predictions(file)
        except ZooError:
            return None
        if [str(c) for c in frame.columns] != self.classes or not frame.index.is_unique:
            return None
        if len(frame) != len(ids) or set(frame.index) != set(map(str, ids)):
            return None
        return frame
