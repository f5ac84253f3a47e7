"""``zoo predict TARGET PATH…``: class probabilities for image files, in ISIC CSV format.

Folders are searched recursively for images; the target (a member or an ensemble) runs with
its TTA scheme and prior correction (``zoo.evaluation.evaluate.prior_settings``). ``--out FILE.csv``
also writes ``FILE.csv.json`` beside the CSV: the target, TTA scheme and priors that made it
(keys in ``docs/formats.md``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from zoo import console
from zoo.data.metadata import read_metadata_csv
from zoo.data.sources import IMAGE_EXTENSIONS, collect_images
from zoo.ensembles.targets import Target, resolve_target
from zoo.errors import ZooError
from zoo.evaluation.evaluate import PriorSettings, prior_settings, tta_record
from zoo.store.outputs import claim_output_file
from zoo.store.workspace import atomic_write_json, atomic_write_text


def predict_command(
    target_name: str,
    paths: Sequence[str | Path],
    *,
    workspace: Path,
    tta: str | None = None,
    prior_correction: bool | None = None,
    target_priors: str | None = None,
    out: str | Path | None = None,
    ood_scores: bool = False,
    calibrated: bool = True,
    metadata: str | Path | None = None,
) -> int:
    """``zoo predict TARGET PATH…``: ISIC CSV of class probabilities to ``out`` or stdout.
    ``metadata``: a CSV of age, sex and site per image, for targets whose members read them.

    ``tta`` None: the target's own; ``prior_correction`` None: the target's own, False: raw
    outputs (as in :func:`zoo.evaluation.evaluate.prior_settings`). With ``out``
    ``FILE.csv`` also ``FILE.csv.json``: how the file was made (target, TTA scheme, prior
    correction and the priors used, inputs)."""
    from zoo.inference.tta import parse_tta

    scheme = parse_tta(tta) if tta is not None else None
    target = resolve_target(target_name, workspace)
    scheme = scheme or parse_tta(target.default_tta)
    priors = prior_settings(
        target,
        prior_correction=prior_correction,
        target_priors=target_priors,
        tta=scheme,
        calibrated=calibrated,
    )
    files = collect_images(paths)
    table = read_metadata_csv(metadata) if metadata is not None else None
    if out is not None:
        check_out(Path(out), files, workspace=workspace)
    to_stdout = out is None
    with console.stdout_reserved(to_stdout):  # stdout carries the CSV alone
        frame = target_predictions(
            target,
            files,
            tta=scheme,
            priors=priors,
            ood=ood_scores,
            workspace=workspace,
            metadata=table,
        )
    for note in priors.notes:
        if to_stdout:  # keep the CSV on stdout clean
            if not console.is_quiet():
                print(f"note: {note}", file=sys.stderr)
        else:
            console.info(f"  note: {note}")
    text = frame.rename_axis("image").to_csv()
    if to_stdout:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    out = Path(out)
    record = _predict_record(
        target,
        scheme,
        priors,
        inputs=paths,
        out=out,
        text=text,
        n_images=len(frame),
        frame_columns=list(frame.columns),
    ) | {"ood_scores": bool(ood_scores), "metadata": None if metadata is None else str(metadata)}
    try:
        atomic_write_text(out, text)
        atomic_write_json(sidecar_path(out), record)
    except OSError as exc:
        raise ZooError(f"--out {out}: cannot write it ({exc.strerror or exc}).") from None
    console.info(f"Wrote {len(frame)} rows to {out} (settings in {sidecar_path(out).name})")
    return 0


def target_predictions(
    target: Target,
    images: Sequence,
    *,
    tta,
    priors: PriorSettings,
    ood: bool = False,
    workspace: Path | None = None,
    metadata: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """What ``zoo predict`` writes for ``images`` (files, or images in memory as
    :meth:`zoo.inference.target.MemberTarget.predict_files` takes them): the target's probabilities
    under the TTA scheme ``tta``, prior-corrected and calibrated as ``priors`` say
    (:meth:`~zoo.evaluation.evaluate.PriorSettings.served`), then the melanoma flag column
    (``mel_flag``: 1 at or above the served operating point's threshold) where the target has
    one for these outputs; with ``ood`` the columns
    ``ood_msp`` and ``ood_energy`` follow the classes, then ``ood_mahalanobis`` and
    ``ood_flag`` (1: below the threshold chosen on validation) where the target's training
    images can be read (:mod:`zoo.inference.ood_features`; a note in ``priors.notes`` otherwise)."""
    frame = target.predict_files(
        images, tta=tta.spec, prior_correction=priors.correct, metadata=metadata
    )
    frame = priors.served(frame)
    point = flag_operating_point(target, tta, priors)
    if isinstance(point, str):
        priors.notes.append(point)
    elif point is not None:  # the flag column follows the classes
        flags = (frame[point.class_name] >= point.threshold).astype(int)
        frame.insert(len(target.classes), point.column, flags)
    if ood:
        from zoo.inference.ood import ood_scores
        from zoo.inference.ood_features import target_density

        scores = ood_scores(frame[[str(c) for c in target.classes]].to_numpy())
        frame = frame.assign(ood_msp=scores["msp"], ood_energy=scores["energy"])
        density = target_density(target, workspace=Path(workspace or Path.cwd()))
        if isinstance(density, str):
            priors.notes.append(density)
        else:
            features = density.file_scores(images)
            frame = frame.assign(
                ood_mahalanobis=features, ood_flag=(features < density.threshold).astype(int)
            )
    return frame


def flag_operating_point(target: Target, scheme, priors: PriorSettings):
    """The operating point zoo serves for the target (:func:`served_operating_point`) when
    these outputs are the ones its threshold was chosen on (the target's TTA and prior
    correction, uniform target priors, and calibrated exactly when the point came with the
    calibration); a note saying why not otherwise; None when it has none."""
    from zoo.inference.calibrated import load_calibration, served_operating_point
    from zoo.inference.tta import parse_tta

    point = served_operating_point(target)
    if point is None:
        return None
    stored = load_calibration(target)
    on_calibrated = stored is not None and stored.operating_point == point
    calibrated = priors.calibration is not None or (stored is not None and stored.method == "none")
    same = (
        scheme == parse_tta(target.default_tta)
        and priors.correct == target.default_prior_correction
        and priors.shift is None
        and on_calibrated == calibrated
    )
    if not same:
        return (
            f"no {point.column} column: the operating point's threshold was chosen with the "
            "target's own TTA, prior correction and calibration, not these settings"
        )
    return point


def check_out(out: Path, inputs: Sequence[Path], *, workspace: Path | None = None) -> None:
    """Refuse, before any work, an ``--out`` that cannot be written or would replace an input
    image (or its settings file would), or that zoo may not write
    (:func:`zoo.store.outputs.claim_output_file`: inside the workspace's own folders, not a
    regular file, or an existing file that zoo did not write)."""
    out = out.expanduser()
    if not out.name or out.name in (".", ".."):
        raise ZooError(f"--out {str(out)!r}: give a file name such as predictions.csv.")
    for file in (out, sidecar_path(out)):
        if file.is_dir():
            raise ZooError(
                f"--out {out}: {file} is a folder; pass a file name such as predictions.csv."
            )
    if {out.resolve(), sidecar_path(out).resolve()} & set(inputs) or (
        out.suffix.lower() in IMAGE_EXTENSIONS and out.exists()
    ):
        raise ZooError(
            f"--out {out} would overwrite an image; pass a new file name such as predictions.csv."
        )
    folder = out.resolve().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ZooError(
            f"--out {out}: cannot write in {folder} ({'not a folder' if not folder.is_dir() else 'permission denied'}); "
            "pass a path in a folder you can write to."
        )
    claim_output_file(out, sidecar=sidecar_path(out), workspace=workspace)


def sidecar_path(csv: Path) -> Path:
    """``FILE.csv.json``: the settings behind the predictions file ``FILE.csv``."""
    return csv.with_name(csv.name + ".json")


def _predict_record(
    target: Target,
    scheme,
    priors: PriorSettings,
    *,
    inputs,
    out: Path,
    text: str,
    n_images: int,
    frame_columns,
) -> dict:
    import zoo

    return {
        "predictions": out.name,
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "target": {"name": target.name, "kind": target.kind, "path": str(target.path)},
        "classes": [str(c) for c in target.classes],
        "n_images": n_images,
        "inputs": [str(p) for p in inputs],
        "tta": scheme.spec,
        "tta_scheme": tta_record(scheme),
        "prior_correction": priors.correct,
        "priors": priors.record,
        "calibration": priors.calibration_record,
        "notes": priors.notes,
        "operating_point": _point_record(target, frame_columns),
        "zoo_version": zoo.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _point_record(target: Target, columns) -> dict | None:
    """The operating point behind the flag column, when the CSV has one."""
    from zoo.inference.calibrated import served_operating_point

    point = served_operating_point(target)
    if point is None or point.column not in columns:
        return None
    return {**point.to_dict(), "column": point.column}
