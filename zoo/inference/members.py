"""Saved members: loading, listing and prediction CSVs.

``<workspace>/members/<name>/`` holds ``model.keras`` (loads with ``safe_mode=True``),
``member.json`` (resolved recipe and options, classes, priors, input spec, data
fingerprint, split ids, versions, timings, metrics), ``predictions/<split>.csv`` (raw
softmax in ISIC format; TTA variants beside them), ``history.csv`` and ``card.md``; every
file and key is described in ``docs/formats.md``.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from zoo.data.metadata import MetadataEncoding
from zoo.errors import ZooError
from zoo.store import MEMBER_FILE, MODEL_FILE, Layout, MemberRecord, PredictionCache
from zoo.store import predictions_file as _predictions_file

# Parts of a Keras config that safe_mode refuses to load: code, not data.
_UNSAFE = {"Lambda": "a Lambda layer (Python code)", "function": "a Python function"}


@dataclass
class Member:
    """A trained member on disk."""

    path: Path

    @cached_property
    def record(self) -> MemberRecord:
        """``member.json`` (:class:`zoo.store.MemberRecord`), its metadata inputs checked too;
        damaged: a one-line ZooError."""
        record = MemberRecord.load(self.path / MEMBER_FILE)
        self._metadata_encoding(record)
        return record

    def _metadata_encoding(self, record: MemberRecord) -> MetadataEncoding | None:
        raw = record.metadata_inputs
        if raw is None:
            return None
        try:
            return MetadataEncoding.from_dict(raw)
        except ValueError as exc:
            raise self.damaged(str(exc)) from None

    @cached_property
    def metadata_encoding(self) -> MetadataEncoding | None:
        """How the member's head reads per-image metadata, or None when it reads none."""
        return self._metadata_encoding(self.record)

    @cached_property
    def info(self) -> dict:
        """``member.json`` as a plain dict, checked for the entries every command needs."""
        return self.record.to_dict()

    @cached_property
    def cache(self) -> PredictionCache:
        """The member's cached predictions (``predictions/<key>.csv`` + sidecar)."""
        return PredictionCache(self.path, self.classes, legacy=not self.record.versioned)

    def damaged(self, reason: str) -> ZooError:
        """The one-line error for a damaged ``member.json``."""
        return ZooError(
            f"{self.path / MEMBER_FILE} is damaged ({reason}); retrain the member or delete "
            f"{self.path}."
        )

    def _entry(self, *keys: str):
        """``info[k1][k2]…``; a missing entry is a :class:`ZooError` naming it."""
        value = self.info
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                raise self.damaged(f"no {'.'.join(keys)!r} entry")
            value = value[key]
        return value

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def image_size(self) -> int:
        return int(self._entry("input", "size"))

    @property
    def input(self) -> dict:
        return dict(self._entry("input"))

    @property
    def effective_priors(self) -> np.ndarray:
        return np.asarray(self._entry("priors", "effective"), dtype=float)

    def split_ids(self, part: str) -> list[str]:
        return list(self._entry("split", "ids", part))

    def load_model(self):
        """The Keras model, loaded safely (no arbitrary code); a damaged or unsafe file is a
        :class:`ZooError` naming it."""
        import keras

        import zoo.models.layers  # noqa: F401
        import zoo.training.augment  # noqa: F401  registers zoo's serializable layers
        import zoo.training.finetune  # noqa: F401  registers the discriminative optimizers

        file = self.path / MODEL_FILE
        problem = model_file_problem(file)
        if problem is None:
            try:
                model = keras.saving.load_model(file, safe_mode=True)
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                problem = f"Keras cannot load it: {str(exc).splitlines()[0][:200]}"
            else:
                problem = self._metadata_mismatch(model)
                if problem is None:
                    return model
        raise ZooError(f"{file}: {problem}; retrain the member or restore that file.")

    def _metadata_mismatch(self, model) -> str | None:
        """Why the model's metadata input does not fit ``member.json``'s, or None."""
        from zoo.models.build import metadata_width

        encoding = self.metadata_encoding
        expected, found = (encoding.width if encoding else 0), metadata_width(model)
        if expected == found:
            return None
        return (
            f"its metadata input has {found} column(s) but member.json's metadata_inputs "
            f"describes {expected}"
        )

    def predictions_file(self, key: str) -> Path:
        return _predictions_file(self.path, key)


def model_file_problem(file: Path) -> str | None:
    """Why ``model.keras`` cannot be loaded safely, found cheaply (the zip directory and
    ``config.json``, not the weights); None when it looks sound."""
    if not file.is_file():
        return "the file is missing"
    if not zipfile.is_zipfile(file):
        return "not a Keras archive (damaged, truncated or not a model)"
    try:
        with zipfile.ZipFile(file) as archive:
            names = set(archive.namelist())
            missing = {"config.json", "model.weights.h5"} - names
            if missing:
                return f"the archive has no {', '.join(sorted(missing))}"
            config = json.loads(archive.read("config.json"))
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return f"damaged Keras archive ({exc})"
    unsafe = _unsafe_part(config)
    return f"unsafe model: it holds {unsafe}, which safe loading refuses" if unsafe else None


def _unsafe_part(config) -> str | None:
    """The first part of a Keras config that is code rather than data."""
    if isinstance(config, dict):
        kind = config.get("class_name")
        if kind in _UNSAFE:
            detail = config.get("config")
            where = f"{config.get('module')}.{detail}" if isinstance(detail, str) else ""
            return _UNSAFE[kind] + (f" ({where})" if where else "")
        if config.get("module") == "builtins":
            return f"a reference to builtins.{config.get('config')}"
        children = config.values()
    elif isinstance(config, list):
        children = config
    else:
        return None
    return next((found for c in children if (found := _unsafe_part(c))), None)


def list_members(workspace: Path) -> list[Member]:
    """Every complete member in the workspace, by name."""
    return [Member(p) for p in Layout(workspace).member_folders()]


def require_image_only(target, what: str) -> None:
    """Refuse a target (member or ensemble) with a member that reads per-image metadata,
    where ``what`` (a command) feeds the network images alone: a one-line ZooError."""
    members = [target.member] if target.kind == "member" else list(target.members)
    for member in members:
        encoding = member.metadata_encoding
        if encoding is not None:
            raise ZooError(
                f"member {member.name} reads {', '.join(encoding.fields)} beside the image, and "
                f"{what} feeds images only; use zoo predict --metadata FILE.csv or the Python "
                "API's predict(..., metadata=...)."
            )
