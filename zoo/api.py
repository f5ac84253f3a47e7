"""The Python API for notebooks and scripts: ``zoo.load``, ``zoo.train``, ``zoo.evaluate``.

Thin wrappers over the library calls the command line makes (:func:`zoo.ensembles.targets.resolve_target`,
:func:`zoo.deploy.predict.target_predictions`, :func:`zoo.training.trainer.train`,
:func:`zoo.evaluation.evaluate.evaluate_target`), so a notebook gets the same numbers as ``zoo predict``
and ``zoo evaluate``. Quiet by default — no progress bars, tables or notes, in a terminal or in
Jupyter — unless a call says ``progress=True``. TensorFlow and Keras are imported inside the
calls that need them, so ``import zoo`` stays cheap.

    >>> import zoo
    >>> model = zoo.load("small_cnn.demo.s0", workspace="zoo-runs")
    >>> model.predict(["lesion.jpg", pixels, pil_image])   # a DataFrame, one row per image
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from zoo.deploy.model import TOP_CLASS, Model, image_sources, load
from zoo.deploy.model import import_backend as _import_backend
from zoo.deploy.model import quietly as _quietly
from zoo.deploy.model import workspace_folder as _workspace
from zoo.errors import ZooError

__all__ = [
    "TOP_CLASS",
    "EvaluationResult",
    "Model",
    "TrainResult",
    "evaluate",
    "image_sources",
    "load",
    "train",
]


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
    (:class:`zoo.training.trainer.TrainOptions`). Trains on the Keras backend of the process
    (TensorFlow, JAX or torch; ``strategy`` other than ``default`` needs TensorFlow)."""
    _import_backend()
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
    those of :func:`zoo.evaluation.evaluate.evaluate_target` — ``split``, ``tta``, ``prior_correction``,
    ``label_map``, ``task``, ``bootstrap``, ``calibrate``, ``operating_points``, ``out``, ….
    The files are written as by the command line; the result holds their folder and
    ``metrics.json``."""
    import inspect

    _import_backend()
    from zoo.evaluation.evaluate import evaluate_target, load_evaluation_data
    from zoo.evaluation.option_checks import check_scoring_options

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
    check_scoring_options(options)
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
