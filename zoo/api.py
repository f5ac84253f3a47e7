"""The Python API for notebooks and scripts: ``zoo.load``, ``zoo.train``, ``zoo.evaluate``.

Thin wrappers over the library calls the command line makes (:func:`zoo.targets.resolve_target`,
:func:`zoo.predict.target_predictions`, :func:`zoo.training.trainer.train`,
:func:`zoo.evaluate.evaluate_target`), so a notebook gets the same numbers as ``zoo predict``
and ``zoo evaluate``. Quiet by default — no progress bars, tables or notes, in a terminal or in
Jupyter — unless a call says ``progress=True``. TensorFlow and Keras are imported inside the
calls that need them, so ``import zoo`` stays cheap.

    >>> import zoo
    >>> model = zoo.load("small_cnn.demo.s0", workspace="zoo-runs")
    >>> model.predict(["lesion.jpg", pixels, pil_image])   # a DataFrame, one row per image
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError

if TYPE_CHECKING:
    import pandas as pd

    from zoo.targets import Target

TOP_CLASS = "top_class"


def _workspace(workspace: str | os.PathLike | None) -> Path:
    from zoo.workspace import resolve_workspace

    given_as = f"workspace={str(workspace)!r}" if workspace is not None else ""
    return resolve_workspace(workspace, given_as=given_as)


def _import_tensorflow() -> None:
    """TensorFlow without its C++ start-up lines; called before any module that imports it."""
    from zoo.cli import _import_tensorflow_quietly

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _import_tensorflow_quietly()


def _quietly(progress: bool):
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
                from zoo.predict import collect_images

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
        progress: bool = False,
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
        target's settings, as on the command line. One picture as a path, an array and a PIL
        image gives the same numbers, except that for a member without border cropping a JPEG
        file over twice the input size is decoded by libjpeg at a reduced scale (as ``zoo
        predict`` does), so pixels decoded from it at full size can differ slightly.
        """
        _import_tensorflow()
        from zoo.evaluate import prior_settings
        from zoo.predict import target_predictions
        from zoo.tta import parse_tta

        sources = image_sources(images)
        with _quietly(progress):
            scheme = parse_tta(tta if tta is not None else self.target.default_tta)
            priors = prior_settings(
                self.target, prior_correction=prior_correction, target_priors=target_priors
            )
            frame = target_predictions(
                self.target,
                sources,
                tta=scheme,
                priors=priors,
                ood=ood_scores,
                workspace=self.workspace,
            )
        classes = [str(c) for c in self.target.classes]
        frame[TOP_CLASS] = frame[classes].idxmax(axis=1)
        frame.attrs["notes"] = list(priors.notes)  # what the command line would have printed
        return frame


def load(name_or_path: str | os.PathLike, workspace: str | os.PathLike | None = None) -> Model:
    """A member or built ensemble by name (looked up in ``workspace``: the argument, else
    ``$ZOO_HOME``, else ``./zoo-runs``) or by its directory, ready to :meth:`Model.predict`.

    An unknown name is a :class:`zoo.errors.ZooError` listing close matches."""
    _import_tensorflow()
    from zoo.targets import resolve_target

    folder = _workspace(workspace)
    return Model(resolve_target(str(name_or_path), folder), workspace=folder)


# --- train and evaluate ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """A trained member: its name, its directory and the headline metrics of ``member.json``
    (``metrics["val"]``/``["test"]``: balanced accuracy, accuracy, macro AUC, image count)."""

    name: str
    path: Path
    metrics: dict

    def load(self) -> Model:
        """The member, ready to predict."""
        return load(self.path)


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """An evaluation: the target's directory, the evaluation folder and its ``metrics.json``."""

    target: str
    target_path: Path
    path: Path
    metrics: dict

    @property
    def balanced_accuracy(self) -> float:
        return float(self.metrics["aggregate"]["balanced_accuracy"])


def _train_fields() -> list[str]:
    from zoo.training.trainer import TrainOptions

    return [f.name for f in dataclasses.fields(TrainOptions) if f.name not in ("recipe", "data")]


def train(
    recipe: str,
    *,
    data: str | None = None,
    workspace: str | os.PathLike | None = None,
    progress: bool = False,
    **overrides,
) -> TrainResult:
    """Train one member, as ``zoo train RECIPE --data DATA …`` does, and return it.

    ``data``: a data spec (``ham10000:DIR``, ``isic:CSV``, ``folder:DIR``, ``csv:FILE``;
    default the demo set). ``overrides``: the options of ``zoo train`` as keywords —
    ``epochs``, ``batch_size``, ``image_size``, ``weights``, ``seed``, ``name``, ``resume``, …
    (:class:`zoo.training.trainer.TrainOptions`)."""
    _import_tensorflow()
    from zoo.training.trainer import TrainOptions
    from zoo.training.trainer import train as run_training

    allowed = [f for f in _train_fields() if f != "workspace"]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        from zoo.errors import close_matches

        raise ZooError(
            f"zoo.train got unknown option(s) {', '.join(unknown)}."
            f"{close_matches(unknown[0], allowed)}"
        )
    options = TrainOptions(recipe=recipe, workspace=_workspace(workspace), data=data, **overrides)
    with _quietly(progress):
        path = Path(run_training(options))
    info = json.loads((path / "member.json").read_text(encoding="utf-8"))
    return TrainResult(name=path.name, path=path, metrics=dict(info.get("metrics") or {}))


def evaluate(
    target: str | os.PathLike | Model,
    *,
    data: str | None = None,
    workspace: str | os.PathLike | None = None,
    progress: bool = False,
    **options,
) -> EvaluationResult:
    """Score a member or ensemble, as ``zoo evaluate`` does, and return the metrics.

    ``target``: a name, a directory or a :class:`Model` from :func:`load`. ``data``: a data
    spec (default the target's training data, scored on its recorded test split). ``options``:
    those of :func:`zoo.evaluate.evaluate_target` — ``split``, ``tta``, ``prior_correction``,
    ``label_map``, ``task``, ``bootstrap``, ``calibrate``, ``operating_points``, ``out``, ….
    The files are written as by the command line; the result holds their folder and
    ``metrics.json``."""
    import inspect

    _import_tensorflow()
    from zoo.evaluate import evaluate_target, load_evaluation_data

    accepted = [
        name
        for name, parameter in inspect.signature(evaluate_target).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "workspace"
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        from zoo.errors import close_matches

        raise ZooError(
            f"zoo.evaluate got unknown option(s) {', '.join(unknown)}."
            f"{close_matches(unknown[0], accepted)}"
        )
    if isinstance(target, Model):
        folder = _workspace(workspace) if workspace is not None else target.workspace
        resolved = target.target
    else:
        model = load(target, workspace)
        folder, resolved = model.workspace, model.target
    with _quietly(progress):
        dataset = load_evaluation_data(resolved, data, workspace=folder, images=None)
        out = evaluate_target(resolved, dataset, workspace=folder, **options)
    metrics = json.loads((Path(out) / "metrics.json").read_text(encoding="utf-8"))
    return EvaluationResult(
        target=resolved.name, target_path=Path(resolved.path), path=Path(out), metrics=metrics
    )
