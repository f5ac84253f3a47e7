"""Inference of a saved member: class probabilities with test-time augmentation, cached.

Raw probabilities (TTA averaged, no prior correction) of one member on one unit of data are
computed once and kept in ``<member>/predictions/<key>.csv`` (ISIC format):

- ``<part>[.<tta>]`` for a recorded part (``test``, ``val``, ``train``) or ``all`` of the
  member's own training data (same fingerprint), e.g. ``test.csv``, ``test.steppan.csv``;
- ``<data name>-<fingerprint8>-all[.<tta>]`` for any other data set.

The cache itself (CSV + a sidecar with the sha256 of ``model.keras``, of the sorted image ids
and the TTA name; reused only while all three match) is :class:`zoo.store.PredictionCache`,
which the trainer writes through too.

Images are decoded once per data set and input setting (:func:`zoo.data.images.load_images`,
cached in ``<workspace>/cache/images``); the model sees large batches, TTA views included
(:func:`zoo.inference.tta.predict_tta`). Prior correction (Steppan & Hanke) is applied after TTA.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from zoo import console
from zoo.data import Dataset
from zoo.data.dataset import safe_name
from zoo.data.metadata import rows_for
from zoo.errors import ZooError
from zoo.inference.members import Member
from zoo.inference.tta import TTAScheme, parse_tta, predict_tta
from zoo.scoring.priors import PriorCorrection
from zoo.store import MODEL_FILE, Layout, file_sha256, predictions_frame
from zoo.store.hashes import predictions_digest

MODEL_BATCH = 128  # images per model call, views included (never below 64 for n_views <= 64)
PROGRESS_STEP = 1024  # original images per progress-bar step
OWN_PARTS = ("test", "val", "train")

_MODELS: dict[Path, tuple[str, object]] = {}


def model_sha256(member: Member) -> str:
    return file_sha256(member.path / MODEL_FILE)


# --- models ---------------------------------------------------------------------------------


def load_model(member: Member):
    """The member's Keras model, loaded once per process (reloaded if model.keras changed)."""
    path = member.path.resolve()
    digest = model_sha256(member)
    hit = _MODELS.get(path)
    if hit is not None and hit[0] == digest:
        return hit[1]
    model = member.load_model()
    _MODELS[path] = (digest, model)
    return model


def clear_model_cache() -> None:
    """Forget every loaded model (frees their memory)."""
    _MODELS.clear()


def run_model(
    model,
    pixels: np.ndarray,
    scheme: TTAScheme,
    *,
    batch_size: int = MODEL_BATCH,
    metadata: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities ``(N, K)`` of decoded ``pixels`` (and their encoded ``metadata``,
    for a model that reads it) under ``scheme``, with progress.

    The model sees about ``batch_size`` images per call: ``batch_size // n_views`` originals,
    each expanded into all of its views.
    """
    n = len(pixels)
    if n == 0:
        return np.zeros((0, int(model.output_shape[-1])))
    per_call = originals_per_call(n, n_views=scheme.n_views, batch_size=batch_size)
    step = per_call * max(1, PROGRESS_STEP // per_call)
    out = []
    with console.progress() as bar:
        task = bar.add_task(f"predicting ({scheme.spec})", total=n, status="")
        for start in range(0, n, step):
            chunk = pad_rows(pixels[start : start + step], per_call)
            rows = None if metadata is None else pad_rows(metadata[start : start + step], per_call)
            probs = predict_tta(model, chunk, scheme, batch_size=per_call, metadata=rows)
            out.append(probs[: min(step, n - start)])
            bar.advance(task, len(out[-1]))
    return np.concatenate(out, axis=0)


def originals_per_call(n: int, *, n_views: int, batch_size: int) -> int:
    """Original images per model call: at most ``batch_size // n_views`` (at least half of
    that), chosen so that padding ``n`` up to a multiple wastes the fewest views — 64 images
    under a 9-view scheme go as 8 calls of 8, not 5 calls of 14 with 6 black images."""
    most = max(1, min(batch_size // n_views, n))
    return min(range((most + 1) // 2, most + 1), key=lambda p: (-(-n // p) * p, -p))


def pad_rows(pixels: np.ndarray, multiple: int) -> np.ndarray:
    """Pad with black images to a multiple of ``multiple`` rows: every model call then has
    the same shape and the predict function is traced (JAX: compiled) once."""
    missing = -len(pixels) % multiple
    if not missing:
        return pixels
    return np.concatenate([pixels, np.zeros((missing, *pixels.shape[1:]), pixels.dtype)])


def image_settings(member: Member) -> dict:
    """Size, border crop and interpolation of the member's input (member.json ``input``)."""
    spec = member.input
    return {
        "size": int(spec["size"]),
        "crop_borders": bool(spec.get("crop_borders", False)),
        "interpolation": str(spec.get("interpolation", "bilinear")),
    }


# --- the cache ------------------------------------------------------------------------------


def is_training_data(member: Member, dataset: Dataset) -> bool:
    """Whether ``dataset`` is the data the member was trained on (same fingerprint)."""
    return dataset.fingerprint == member.info["data"]["fingerprint"]


def cache_part(member: Member, dataset: Dataset, ids: Sequence[str]) -> tuple[str, list[str]]:
    """The cached unit that holds ``ids``: the smallest recorded part of the training data
    that contains them, else all of ``dataset``."""
    if is_training_data(member, dataset):
        wanted = set(ids)
        for part in OWN_PARTS:
            part_ids = member.split_ids(part)
            if wanted <= set(part_ids):
                return part, part_ids
    return "all", dataset.ids


def cache_key(member: Member, dataset: Dataset, part: str, scheme: TTAScheme) -> str:
    """``test``, ``test.steppan``, ``isic2019-1a2b3c4d-all.rotations-8``, …"""
    base = part
    if not is_training_data(member, dataset):
        base = f"{safe_name(dataset.name)}-{dataset.fingerprint[:8]}-{part}"
    return base if scheme.kind == "none" else f"{base}.{scheme.name}"


def metadata_inputs(member: Member, dataset: Dataset, ids: Sequence[str]) -> np.ndarray | None:
    """The encoded metadata of ``ids`` for a member that reads it, else None."""
    encoding = member.metadata_encoding
    return None if encoding is None else encoding.encode(dataset.metadata(ids))


def cached_probabilities(
    member: Member, key: str, ids: Sequence[str], scheme: TTAScheme, metadata=None
) -> pd.DataFrame | None:
    """The cached raw probabilities for ``key`` if still valid, else ``None``."""
    digest = predictions_digest(model_sha256(member), metadata)
    return member.cache.read(key, ids, tta=scheme.name, model_sha256=digest)


def _store(
    member: Member, key: str, frame: pd.DataFrame, scheme: TTAScheme, metadata=None
) -> pd.DataFrame:
    """Write the cache entry; return the probabilities as cached (see PredictionCache.write)."""
    seconds = frame.attrs.get("inference", {}).get("seconds")
    try:
        return member.cache.write(
            key,
            frame,
            tta=scheme.name,
            model_sha256=predictions_digest(model_sha256(member), metadata),
            seconds=seconds,
            origin="zoo.inference.target",
        )
    except OSError as exc:
        where = member.predictions_file(key).parent
        console.warn(f"cannot cache predictions in {where} ({exc}); they are not reused.")
        return frame


def _compute(member, dataset, ids, scheme, workspace, metadata=None) -> pd.DataFrame:
    from zoo.data.images import load_images

    table = load_images(dataset, **image_settings(member), cache_dir=Layout(workspace).image_cache)
    pixels = table.take(ids)
    model = load_model(member)
    start = time.perf_counter()
    probs = run_model(model, pixels, scheme, metadata=metadata)
    seconds = time.perf_counter() - start
    frame = predictions_frame(ids, probs, member.classes)
    frame.attrs["inference"] = {
        "cached": False,
        "seconds": seconds,
        "images_per_second": len(ids) / seconds if seconds > 0 else None,
    }
    return frame


def member_probabilities(
    member: Member,
    dataset: Dataset,
    ids: Sequence[str],
    *,
    tta: str | TTAScheme = "none",
    workspace: Path,
) -> pd.DataFrame:
    """Raw class probabilities (TTA averaged, no prior correction) of ``ids`` of ``dataset``.

    Index ``image`` in the order of ``ids``, one column per class of the member. Computed for
    the whole cached unit that holds ``ids`` (see :func:`cache_part`) and reused while
    ``model.keras``, the unit's ids and the TTA scheme are unchanged. ``attrs["inference"]``
    says whether the cache answered and how long the model took when it ran.
    """
    scheme = parse_tta(tta)
    ids = [str(i) for i in ids]
    unknown = pd.Index(ids).difference(dataset.records.index)
    if len(unknown):
        raise ZooError(
            f"{len(unknown)} image id(s) are not in data set {dataset.spec}, e.g. "
            f"{list(unknown[:3])}; ask only for ids of that data set."
        )
    part, part_ids = cache_part(member, dataset, ids)
    key = cache_key(member, dataset, part, scheme)
    metadata = metadata_inputs(member, dataset, part_ids)
    frame = cached_probabilities(member, key, part_ids, scheme, metadata)
    if frame is None:
        computed = _compute(member, dataset, part_ids, scheme, workspace, metadata)
        frame = _store(member, key, computed, scheme, metadata)
    attrs = dict(frame.attrs.get("inference") or {"cached": True})
    out = frame.loc[ids]
    out.attrs["inference"] = {**attrs, "key": key, "n_images": len(part_ids)}
    return out


# --- files outside any data set -------------------------------------------------------------


def image_names(paths: Sequence[Path]) -> list[str]:
    """Row names for image files: the file stem, or the path relative to the files' common
    folder (without extension, with it if still ambiguous) where stems collide."""
    paths = [Path(p).resolve() for p in paths]
    stems = pd.Series([p.stem for p in paths])
    clash = stems.duplicated(keep=False).to_numpy()
    if not clash.any():
        return stems.tolist()
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    relative = [p.relative_to(root) for p in paths]
    names = [
        r.with_suffix("").as_posix() if c else s
        for r, c, s in zip(relative, clash, stems, strict=True)
    ]
    if len(set(names)) < len(names):
        names = [r.as_posix() if c else s for r, c, s in zip(relative, clash, stems, strict=True)]
    return names


def is_file_path(image) -> bool:
    """Whether an image source names a file (else it is a file object or in memory)."""
    return isinstance(image, str | os.PathLike)


def image_label(images: Sequence, position: int) -> str:
    """How an error names the image at ``position``: its path, else ``image <position>``."""
    image = images[position]
    return str(image) if is_file_path(image) else f"image {position}"


def source_names(images: Sequence) -> list[str]:
    """:func:`image_names` for the files among ``images``; ``image<position>`` for the rest."""
    files = [i for i, image in enumerate(images) if is_file_path(image)]
    names = [f"image{i}" for i in range(len(images))]
    for i, name in zip(files, image_names([images[i] for i in files]), strict=True):
        names[i] = name
    return names


def decode_files(paths: Sequence, member: Member) -> np.ndarray:
    """Pixels of image files (or file objects, PIL images, uint8 arrays — what
    :func:`zoo.data.images.read_image` takes) at the member's input settings; an unreadable
    image is an error."""
    from zoo.data.images import decode_many

    pixels, problems = decode_many(
        [str(p) if is_file_path(p) else p for p in paths],
        **image_settings(member),
        description="decoding images",
    )
    if problems:
        first = min(problems)
        more = f" (and {len(problems) - 1} more unreadable file(s))" if len(problems) > 1 else ""
        raise ZooError(
            f"cannot read {image_label(paths, first)}: {problems[first]}{more}; fix or remove it."
        )
    return pixels


# --- the Target ----------------------------------------------------------------------------


@dataclass
class MemberTarget:
    """A saved member as a :class:`zoo.ensembles.targets.Target` of ``evaluate`` and ``predict``."""

    member: Member
    kind: str = field(default="member", init=False)
    default_tta: str = field(default="none", init=False)
    default_prior_correction: bool = field(default=True, init=False)
    operating_point: None = field(default=None, init=False)  # only ensembles store one

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> MemberTarget:
        return cls(Member(Path(path).resolve()))

    @property
    def name(self) -> str:
        return self.member.name

    @property
    def path(self) -> Path:
        return self.member.path

    @property
    def classes(self) -> list[str]:
        return self.member.classes

    @property
    def data_info(self) -> dict:
        return dict(self.member.info["data"])

    def split_ids(self, part: str) -> list[str]:
        if part not in OWN_PARTS:
            raise ZooError(f"unknown part {part!r}; expected one of {', '.join(OWN_PARTS)}.")
        return self.member.split_ids(part)

    def prior_correction(self) -> PriorCorrection:
        """Steppan & Hanke: from the effective training priors to uniform priors."""
        priors = pd.Series(self.member.effective_priors, index=self.classes)
        return PriorCorrection().fit(priors)

    def _finish(self, raw: pd.DataFrame, prior_correction: bool) -> pd.DataFrame:
        if not prior_correction:
            return raw
        corrected = self.prior_correction().transform(raw)
        corrected.attrs = dict(raw.attrs)
        return corrected

    def probabilities(
        self,
        dataset: Dataset,
        ids: Sequence[str],
        *,
        tta: str = "none",
        prior_correction: bool = True,
        workspace: Path,
    ) -> pd.DataFrame:
        """TTA-averaged (cached) probabilities of ``ids``, then prior-corrected if asked."""
        raw = member_probabilities(self.member, dataset, ids, tta=tta, workspace=workspace)
        return self._finish(raw, prior_correction)

    def predict_files(
        self,
        paths: Sequence,
        *,
        tta: str = "none",
        prior_correction: bool = True,
        metadata: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Probabilities for image files (index: :func:`image_names`); not cached. Images
        already in memory (see :func:`decode_files`) are named ``image<position>``.
        ``metadata``: age, sex and site by image name (:func:`zoo.data.metadata.read_metadata_csv`),
        for a member that reads them; an image without a row reads as missing."""
        scheme = parse_tta(tta)
        paths = [Path(p) if is_file_path(p) else p for p in paths]
        pixels = decode_files(paths, self.member)
        names = source_names(paths)
        rows = self._metadata_rows(names, metadata)
        probs = run_model(load_model(self.member), pixels, scheme, metadata=rows)
        raw = predictions_frame(names, probs, self.classes)
        return self._finish(raw, prior_correction)

    def _metadata_rows(self, names: list[str], metadata: pd.DataFrame | None):
        """The encoded metadata of the images ``names``, for a member that reads it; what is
        not given reads as missing, and the member says so once."""
        encoding = self.member.metadata_encoding
        if encoding is None:
            return None
        fields = ", ".join(encoding.fields)
        if metadata is None:
            console.warn(
                f"member {self.name} reads {fields} beside the image; none given "
                "(--metadata CSV), so they read as missing."
            )
            metadata = pd.DataFrame(index=pd.Index([], dtype=str))
        frame = rows_for(metadata, names)
        absent = int(frame.isna().all(axis=1).sum()) if len(frame.columns) else len(frame)
        if absent > 0 and len(metadata):
            console.warn(f"{absent} image(s) have no metadata row: their {fields} read as missing.")
        unseen = encoding.unknown_sites(frame.fillna(""))
        if unseen:
            console.warn(
                f"site(s) {', '.join(unseen)} were not in member {self.name}'s training data: "
                "read as missing."
            )
        return encoding.encode(frame.fillna(""))
