"""A loaded member or ensemble that predicts images: what ``zoo.load`` returns, and what
``zoo serve`` answers with. It computes exactly what ``zoo predict`` computes
(:func:`zoo.deploy.predict.target_predictions`)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError

if TYPE_CHECKING:
    import pandas as pd

    from zoo.ensembles.targets import Target

TOP_CLASS = "top_class"


def workspace_folder(workspace: str | os.PathLike | None) -> Path:
    from zoo.store.workspace import resolve_workspace

    given_as = f"workspace={str(workspace)!r}" if workspace is not None else ""
    return resolve_workspace(workspace, given_as=given_as)


def import_backend() -> None:
    """Keras and its backend (TensorFlow without its C++ start-up lines); called before any
    module that imports Keras."""
    from zoo.console import import_backend_quietly

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import_backend_quietly()


def quietly(progress: bool):
    from zoo import console

    return console.quiet_unless(progress)


# --- images ---------------------------------------------------------------------------------


def image_sources(images) -> list:
    """One list of image sources from what :meth:`Model.predict` accepts: a file path or
    folder, a PIL image, a uint8 array ``H × W × 3`` (one image) or ``N × H × W × 3`` (a batch),
    bytes of an encoded image or a binary file object — or a list of these."""
    import numpy as np
    from PIL import Image

    if isinstance(images, str | os.PathLike | Image.Image | bytes | io.IOBase | np.ndarray):
        images = [images]
    sources: list = []
    for position, image in enumerate(images):
        if isinstance(image, str | os.PathLike):
            path = Path(image).expanduser()
            if path.is_dir():
                from zoo.data.sources import collect_images

                sources += collect_images([str(path)])
            elif path.is_file():
                sources.append(path)
            else:
                raise ZooError(f"images[{position}]: no such file or folder {str(image)!r}.")
        elif isinstance(image, np.ndarray):
            sources += _array_images(image, position)
        elif isinstance(image, bytes):
            sources.append(io.BytesIO(image))
        elif isinstance(image, Image.Image | io.IOBase):
            sources.append(image)
        else:
            raise ZooError(
                f"images[{position}]: expected a file path, a PIL image, a uint8 array or the "
                f"bytes of an image file; got {type(image).__name__}."
            )
    if not sources:
        raise ZooError("no images to predict; pass file paths, folders, arrays or PIL images.")
    return sources


def _array_images(array, position: int) -> list:
    import numpy as np

    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ZooError(
            f"images[{position}]: an array must be uint8 RGB of shape (height, width, 3) or "
            f"(n, height, width, 3); got {array.dtype} {array.shape}. Convert floats in [0, 1] "
            "with (x * 255).round().astype('uint8')."
        )
    return [array] if array.ndim == 3 else list(array)


# --- load and predict ------------------------------------------------------------------------


class Model:
    """A loaded member or ensemble (:func:`load`). It answers what its target answers
    (``name``, ``kind``, ``path``, ``classes``, ``operating_point`` where the target has one,
    …); :meth:`predict` gives class probabilities for images."""

    def __init__(self, target: Target, *, workspace: Path):
        self.target = target
        self.workspace = workspace

    def __getattr__(self, name: str) -> Any:
        if name == "target":  # not yet set (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.target, name)

    @property
    def operating_point(self):
        """The melanoma operating point zoo serves for this target: the one stored with an
        ensemble, else the one of its ``calibration.json``; None without either."""
        from zoo.inference.calibrated import served_operating_point

        return served_operating_point(self.target)

    def __repr__(self) -> str:
        return f"zoo.Model({self.target.kind} {self.target.name!r}, classes={self.classes})"

    def predict(
        self,
        images,
        *,
        tta: str | None = None,
        prior_correction: bool | None = None,
        target_priors: str | Mapping[str, float] | None = None,
        ood_scores: bool = False,
        calibrated: bool = True,
        progress: bool = False,
        metadata=None,
    ) -> pd.DataFrame:
        """Class probabilities of ``images``, exactly as ``zoo predict`` computes them.

        ``images``: a file path or folder, a PIL image, a uint8 RGB array (``H × W × 3``, or
        ``N × H × W × 3`` for a batch), the bytes of an image file, or a list of these. Rows
        are named by file stem (as ``zoo predict`` names them), ``image<position>`` for the
        others; columns are the classes, then with ``ood_scores`` ``ood_msp``, ``ood_energy``
        and, where the target's training images can be read, ``ood_mahalanobis`` and
        ``ood_flag`` (fitted once and cached in the workspace), then ``top_class``. The notes
        ``zoo predict`` would print (say, why ``ood_mahalanobis`` is missing) are in
        ``frame.attrs["notes"]``. ``tta``, ``prior_correction`` and ``target_priors`` default to the
        target's settings, as on the command line; the target's stored calibration is applied
        where it holds for them (``calibrated=False``: uncalibrated, as ``--no-calibration``). One picture as a path, an array and a PIL
        image gives the same numbers, except that for a member without border cropping a JPEG
        file over twice the input size is decoded by libjpeg at a reduced scale (as ``zoo
        predict`` does), so pixels decoded from it at full size can differ slightly.

        ``metadata``, for a target whose members read age, sex and site beside the image: a
        list of dicts (one per image, in order; keys ``age``, ``sex``, ``site``), a DataFrame
        indexed by row name, or the path of a CSV as ``zoo predict --metadata`` reads it.
        """
        import_backend()
        from zoo.deploy.predict import target_predictions
        from zoo.evaluation.evaluate import prior_settings
        from zoo.evaluation.option_checks import check_scoring_options

        check_scoring_options(
            {
                "tta": tta,
                "prior_correction": prior_correction,
                "target_priors": target_priors,
                "ood_scores": ood_scores,
                "calibrated": calibrated,
                "progress": progress,
            },
            "prediction",
        )
        from zoo.inference.tta import parse_tta

        sources = image_sources(images)
        table = metadata_table(metadata, sources)
        with quietly(progress):
            scheme = parse_tta(tta if tta is not None else self.target.default_tta)
            priors = prior_settings(
                self.target,
                prior_correction=prior_correction,
                target_priors=target_priors,
                tta=scheme,
                calibrated=calibrated,
            )
            frame = target_predictions(
                self.target,
                sources,
                tta=scheme,
                priors=priors,
                ood=ood_scores,
                workspace=self.workspace,
                metadata=table,
            )
        classes = [str(c) for c in self.target.classes]
        frame[TOP_CLASS] = frame[classes].idxmax(axis=1)
        frame.attrs["notes"] = list(priors.notes)  # what the command line would have printed
        return frame


def metadata_table(metadata, sources: list) -> pd.DataFrame | None:
    """``Model.predict``'s ``metadata`` as a table indexed by row name; else a ZooError."""
    import pandas as pd

    from zoo.data.metadata import read_metadata_csv
    from zoo.inference.target import source_names

    if metadata is None or isinstance(metadata, pd.DataFrame):
        return metadata
    if isinstance(metadata, str | os.PathLike):
        return read_metadata_csv(metadata)
    if isinstance(metadata, list | tuple) and all(isinstance(m, dict) for m in metadata):
        if len(metadata) != len(sources):
            raise ZooError(
                f"metadata: {len(metadata)} row(s) for {len(sources)} image(s); give one per image."
            )
        return pd.DataFrame(list(metadata), index=source_names(sources))
    raise ZooError(
        "metadata: expected a list of dicts (one per image), a DataFrame or a CSV path; got "
        f"{type(metadata).__name__}."
    )


def load(name_or_path: str | os.PathLike, workspace: str | os.PathLike | None = None) -> Model:
    """A member or built ensemble by name (looked up in ``workspace``: the argument, else
    ``$ZOO_HOME``, else ``./zoo-runs``) or by its directory, ready to :meth:`Model.predict`.

    An unknown name is a :class:`zoo.errors.ZooError` listing close matches."""
    import_backend()
    from zoo.ensembles.targets import resolve_target

    folder = workspace_folder(workspace)
    return Model(resolve_target(str(name_or_path), folder), workspace=folder)
