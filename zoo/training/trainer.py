"""Train one member: data → split → cached pixels → stages of fit → saved member.

The run lives in ``<workspace>/runs/<name>/`` while it trains (a checkpoint and ``state.json``
after every epoch, so ``--resume`` continues where it stopped) and becomes
``<workspace>/members/<name>/`` in one rename when it is complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from zoo import console
from zoo.data import Dataset, load_dataset
from zoo.data.combined import source_weights, split_counts
from zoo.data.duplicates import (
    ImageHashes,
    duplicate_report,
    image_hashes,
    merge_duplicates,
    public,
    save_hashes,
)
from zoo.data.images import ImageTable, load_images
from zoo.data.pipeline import inference_dataset, training_dataset
from zoo.data.splits import Split, check_split_options, keep_together, make_split
from zoo.errors import DataProblems, ZooError
from zoo.models.backbones import get_backbone
from zoo.models.build import build_model, check_weights, split_model, weights_provenance
from zoo.models.stock import without_optimizer
from zoo.recipes.recipe import Recipe, get_recipe
from zoo.recipes.schedules import learning_rate
from zoo.recipes.specs import StageSpec
from zoo.scoring.headline import headline_metrics
from zoo.scoring.priors import PriorCorrection, effective_priors
from zoo.store import (
    MEMBER_FILE,
    MODEL_FILE,
    TRAIN_HASHES_FILE,
    Layout,
    MemberRecord,
    PredictionCache,
    predictions_frame,
    sha256_of,
)
from zoo.store.locks import hold
from zoo.store.names import check_name
from zoo.store.records import RunStateRecord
from zoo.store.workspace import atomic_directory, atomic_path, atomic_write_json, atomic_write_text
from zoo.training.batchnorm import recompute_statistics
from zoo.training.card import library_versions, model_card
from zoo.training.class_weights import class_weights
from zoo.training.distributed import fit_with_strategy, needs_custom_loop
from zoo.training.extra_members import ExtraMembers, extra_member_names, made_by
from zoo.training.finetune import make_optimizer, prepare_backbone
from zoo.training.monitor import Diverged, LearningRateSchedule, TrainingMonitor
from zoo.training.partition import Plan, plan_partition, relabel, summed_model, summed_priors
from zoo.training.resize import copy_weights, resized_network
from zoo.training.runtime import configure_precision, is_chief, make_strategy


@dataclass
class TrainOptions:
    """What ``zoo train`` was asked to do (``None`` = the recipe's or the data set's default)."""

    recipe: str
    workspace: Path
    data: str | None = None
    images: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    crop_borders: bool | None = None
    weights: str | None = None
    seed: int = 0
    split_seed: int = 0
    fold: int | None = None
    folds: int | None = None
    name: str | None = None
    resume: bool = False
    mixed_precision: bool = False
    strategy: str = "default"
    jit_compile: str = "auto"
    feature_cache: bool = True
    settings: tuple[str, ...] = ()  # --set KEY=VALUE, applied to the recipe in order
    partition: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["workspace"] = str(self.workspace)
        return data


def default_name(recipe: str, dataset: Dataset, options: TrainOptions) -> str:
    """``<recipe>.<data>.s<seed>[.f<fold>]``: the name carries the member's identity."""
    name = f"{recipe}.{dataset.name}.s{options.seed}"
    return f"{name}.f{options.fold}" if options.fold is not None else name


def predict_probabilities(model, pixels: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    """Softmax outputs for decoded pixels, batched and prefetched."""
    if len(pixels) == 0:
        return np.zeros((0, model.output_shape[-1]))
    return model.predict(inference_dataset(pixels, batch_size=batch_size), verbose=0)


@dataclass
class _Run:
    """Everything one training run needs, resolved."""

    options: TrainOptions
    recipe: Recipe
    dataset: Dataset
    split: Split
    name: str
    weights: str
    directory: Path
    pixels: ImageTable | None = None
    hashes: ImageHashes | None = None
    duplicates: dict | None = None
    plan: Plan | None = None  # --partition: training classes of a taxonomy
    source: Dataset | None = None  # the data as read (fine labels), when ``plan`` relabels it
    history: list = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -1.0
    epochs_since_best: int = 0
    seconds: float = 0.0
    replicas: int = 1
    precision: str = "float32"
    state: dict | None = None  # state.json of the interrupted run that --resume continues
    extras: ExtraMembers | None = None  # snapshots and SWA: members besides the run's own
    resized: dict = field(default_factory=dict)  # image size → pixels of stages at that size

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    def labels(self, part: str) -> np.ndarray:
        return self.dataset.subset(self.split.ids(part)).labels


# Options that shape a run: --resume refuses values that contradict the interrupted run's
# (a changed data set is caught by its fingerprint).
RESUME_OPTIONS = (
    "epochs",
    "batch_size",
    "image_size",
    "crop_borders",
    "weights",
    "seed",
    "split_seed",
    "fold",
    "folds",
    "settings",
)


def _resolve(options: TrainOptions, stack: contextlib.ExitStack | None = None) -> _Run:
    """Recipe, data, defaults, name, run directory, decoded pixels and split.

    Every check runs here, before a model is built: options, the run directory (locked in
    ``stack`` against a second run of the same name; without a stack, only while resolving),
    the state of a run to resume, then the data (see :func:`_check_data`).
    """
    if stack is None:
        with contextlib.ExitStack() as local:
            return _resolve(options, local)
    workspace = options.workspace
    unset = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    given = {k: getattr(options, k) for k in RESUME_OPTIONS if getattr(options, k) != unset[k]}
    if options.name is not None:
        check_name(options.name, what="--name")
    recipe = get_recipe(options.recipe, workspace=workspace).with_settings(options.settings)
    check_split_options(fold=options.fold, folds=options.folds)
    dataset = load_dataset(
        options.data, workspace=workspace, images=Path(options.images) if options.images else None
    )
    if dataset.is_demo:
        console.info(
            "[bold yellow]Using the embedded demo data set[/bold yellow] (synthetic lesion-like images, "
            "7 classes, 420 images) — pass --data to train on real images."
        )
        defaults = dataset.defaults
        settings = [s.partition("=")[0].strip() for s in options.settings]  # --set wins too
        if options.image_size is None and "input.size" not in settings:
            options.image_size = max(defaults["image_size"], recipe.input.min_size)
        if options.epochs is None and not any(
            fnmatch.fnmatch(k, "stages.*.epochs") for k in settings
        ):
            options.epochs = defaults["epochs"]
    for note in dataset.notes:
        console.info(f"  note: {note}")
    _check_classes(dataset)
    plan, source = None, None
    if options.partition:
        plan = plan_partition(dataset.labelled().records["label"], options.partition)
        source, dataset = dataset, relabel(dataset, plan)
        console.info(
            f"  partition (max_class_size {plan.max_class_size}): {len(plan.training)} training "
            f"classes ({', '.join(plan.training)}) summed into {len(plan.inference)} inference "
            "classes"
        )
    weights = options.weights or (
        "auto" if recipe.model.weights == "imagenet" else recipe.model.weights
    )
    recipe = recipe.with_overrides(
        image_size=options.image_size,
        epochs=options.epochs,
        batch_size=options.batch_size,
        crop_borders=options.crop_borders,
    )
    name = check_name(options.name or default_name(recipe.name, dataset, options), what="--name")
    layout = Layout(options.workspace)
    directory, member_dir = layout.run(name), layout.member(name)
    stack.enter_context(hold(member_dir, what=f"zoo train {name}"))
    _forget_empty_run(directory, resume=options.resume)
    if member_dir.exists():
        raise ZooError(
            f"member {name!r} already exists in {member_dir.parent}; pass --name to train another, "
            "or delete that directory to retrain it."
        )
    if directory.exists() and not options.resume:
        raise ZooError(
            f"an interrupted run of {name!r} exists in {directory}; pass --resume to continue it, "
            "or delete that directory to start over."
        )
    state, split = None, None
    if options.resume and directory.exists():
        state, recipe, split = _read_state(directory / "state.json")
        _check_resume_options(state, recipe, given, file=directory / "state.json")
        for key in RESUME_OPTIONS:
            setattr(options, key, (state.get("options") or {}).get(key, getattr(options, key)))
        weights = state["weights"]
        if state["fingerprint"] != dataset.fingerprint:
            raise ZooError(
                f"--resume: the data changed since {name} started (fingerprint "
                f"{state['fingerprint']} → {dataset.fingerprint}); start a new run."
            )
    for extra in extra_member_names(recipe, name):
        _reserve_extra_member(stack, layout, extra, run_name=name, resume=state is not None)
    if state is None:
        check_weights(recipe, image_size=recipe.input.size, weights=weights)
    hashes, duplicates = _find_duplicates(dataset, options)
    together = merge_duplicates(dataset, duplicates).records["group"]
    pixels, split = _check_data(dataset, recipe, options, split, together=together)
    return _Run(
        options,
        recipe,
        dataset,
        split,
        name,
        weights,
        directory,
        pixels=pixels,
        hashes=hashes,
        duplicates=duplicates,
        plan=plan,
        source=source,
        state=state,
    )


def _reserve_extra_member(
    stack: contextlib.ExitStack, layout: Layout, name: str, *, run_name: str, resume: bool
) -> None:
    """Lock the directory of a snapshot or SWA member of the run; one that exists is an error,
    unless ``--resume`` goes on with the run that saved it before it was interrupted."""
    folder = layout.member(check_name(name, what="--name"))
    stack.enter_context(hold(folder, what=f"zoo train {run_name}"))
    if folder.exists() and not (resume and _made_by(folder, run_name)):
        raise ZooError(
            f"member {name!r} (an extra member of {run_name}) already exists in {folder.parent}; "
            "pass --name to train another, or delete that directory to retrain it."
        )


def _made_by(folder: Path, run_name: str) -> bool:
    try:
        return made_by(json.loads((folder / MEMBER_FILE).read_text(encoding="utf-8")), run_name)
    except (OSError, ValueError, AttributeError):
        return False


def _find_duplicates(dataset: Dataset, options: TrainOptions) -> tuple[ImageHashes, dict]:
    """Perceptual hashes of every image (cached) and the near-duplicate pairs among them; the
    pairs' lesions are merged before the split so no picture straddles train/val/test."""
    hashes = image_hashes(dataset, cache_dir=options.workspace / "cache" / "hashes")
    report = duplicate_report(dataset, hashes)
    if report["pairs"]:
        shown = ", ".join(f"{e['a']} ≈ {e['b']}" for e in report["examples"][:3])
        console.info(
            f"  duplicates: {report['pairs']} pair(s) of near-identical images "
            f"({report['across_sources']} across sources, {report['other_lesion']} of different "
            f"lesions, {report['label_conflicts']} with different labels), e.g. {shown}; "
            "each pair is kept in one part of the split"
        )
    return hashes, report


def _check_classes(dataset: Dataset) -> None:
    """A classifier needs images of at least two classes."""
    present = sorted({dataset.classes[i] for i in np.unique(dataset.labelled().labels)})
    if len(present) < 2:
        raise ZooError(
            f"data set {dataset.spec} has images of {len(present)} class(es) "
            f"({', '.join(present) or 'none'}); a classifier needs at least two classes."
        )


def _forget_empty_run(directory: Path, *, resume: bool) -> None:
    """A run interrupted before its first checkpoint holds nothing to resume: start it over."""
    if directory.exists() and not (directory / "state.json").exists():
        console.warn(
            f"{directory} holds no checkpoint (stopped in its first epoch); starting over."
        )
        shutil.rmtree(directory)
    elif resume and not directory.exists():
        console.info(
            f"--resume: no checkpoint of this run in {directory.parent}; starting from epoch 1."
        )


def _check_resume_options(state: dict, recipe: Recipe, given: dict, *, file: Path) -> None:
    """Refuse options given with --resume that contradict the interrupted run, naming them."""
    saved = state.get("options") if isinstance(state.get("options"), dict) else {}
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    effective = {
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "image_size": recipe.input.size,
        "crop_borders": recipe.input.crop_borders,
        "weights": state["weights"],
    }
    clashes = [
        f"--{'set' if key == 'settings' else key.replace('_', '-')} {value} "
        f"(the run has {saved.get(key, effective.get(key))})"
        for key, value in given.items()
        if value is not None and value not in (saved.get(key), effective.get(key, saved.get(key)))
    ]
    if clashes:
        raise ZooError(
            f"--resume: {', '.join(clashes)} contradict the interrupted run in {file.parent}; "
            "drop those options to continue it, or delete that folder to start over."
        )


STATE_KEYS = (
    "recipe",
    "split",
    "weights",
    "fingerprint",
    "epochs_done",
    "best_epoch",
    "best_score",
    "epochs_since_best",
    "history",
    "seconds",
)


def _read_state(file: Path) -> tuple[dict, Recipe, Split]:
    """The ``state.json`` of an interrupted run with its recipe and split; a damaged file is a
    :class:`ZooError` that names it and says what to do."""
    fix = f"the run cannot be resumed: delete {file.parent} and train again without --resume"
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ZooError(f"--resume: cannot read {file} ({reason}); {fix}.") from None
    if not isinstance(state, dict):
        raise ZooError(
            f"--resume: {file} holds a JSON {type(state).__name__}, not an object; {fix}."
        )
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise ZooError(f"--resume: {file} is damaged: no {', '.join(missing)}; {fix}.")
    try:  # every value the run goes on from, checked by its record in zoo.store
        RunStateRecord.from_dict(state)
    except ValueError as exc:
        raise ZooError(f"--resume: {file} is damaged ({exc}); {fix}.") from None
    try:
        return state, Recipe.from_dict(state["recipe"]), Split.from_dict(state["split"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ZooError(
            f"--resume: {file} is damaged (its recipe or split: {exc.__class__.__name__}: {exc}); "
            f"{fix}."
        ) from None


def _check_data(
    dataset: Dataset,
    recipe: Recipe,
    options: TrainOptions,
    split: Split | None,
    *,
    together: pd.Series | None = None,
) -> tuple[ImageTable, Split]:
    """Decode every image at the training size (once: the pixels are cached and used for
    training) and draw the split (unless resuming one); raise one :class:`DataProblems` with
    the reader's problems, every unreadable image and every reason the split is impossible."""
    problems: list[str] = []
    pixels = None
    try:
        pixels = load_images(
            dataset,
            size=recipe.input.size,
            crop_borders=recipe.input.crop_borders,
            interpolation=recipe.input.interpolation,
            cache_dir=Layout(options.workspace).image_cache,
        )
    except DataProblems as exc:  # the reader's problems and every unreadable image
        problems += exc.problems
    if split is None:
        try:  # on the images with a known label: the reader reports the others
            split = make_split(
                dataset.labelled(), seed=options.split_seed, fold=options.fold, folds=options.folds
            )
            if together is not None:  # duplicates of one picture end up in one part
                split = keep_together(split, together)
        except DataProblems as exc:
            problems += exc.problems
    if problems:
        raise DataProblems(dataset.spec, problems)
    return pixels, split


def _stage_plan(stages: tuple[StageSpec, ...]) -> list[tuple[int, StageSpec]]:
    """(first global epoch, stage) for every stage."""
    plan, start = [], 0
    for stage in stages:
        plan.append((start, stage))
        start += stage.epochs
    return plan


def _save_checkpoint(run: _Run, model, row: dict, is_best: bool, epoch: int) -> None:
    run.history.append(row)
    if is_best:
        run.best_epoch, run.best_score, run.epochs_since_best = (
            epoch,
            row["val_balanced_accuracy"],
            0,
        )
        with atomic_path(run.directory / "best.weights.h5", suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
    else:
        run.epochs_since_best += 1
    with atomic_path(run.directory / "checkpoint.keras", suffix=".keras") as tmp:
        model.save(tmp)
    atomic_write_json(
        run.state_file,
        {
            "name": run.name,
            "options": run.options.to_dict(),
            "recipe": run.recipe.as_dict(),
            "weights": run.weights,
            "split": run.split.to_dict(),
            "fingerprint": run.dataset.fingerprint,
            "epochs_done": epoch,
            "best_epoch": run.best_epoch,
            "best_score": run.best_score,
            "epochs_since_best": run.epochs_since_best,
            "history": run.history,
            "seconds": run.seconds + row["seconds"],
            **({"extras": run.extras.state()} if run.extras is not None else {}),
        },
    )
    run.seconds += row["seconds"]


def _end_of_epoch(
    run: _Run, model, stage: StageSpec, first_epoch: int, row: dict, is_best: bool, epoch: int
) -> None:
    """Once an epoch is validated: snapshot and weight average (extra members), then the
    checkpoint; the history records each epoch's image size when a stage has its own."""
    if run.extras is not None:
        run.extras.after_epoch(model, stage, epoch_in_stage=epoch - first_epoch, epoch=epoch)
    if any(s.image_size for s in run.recipe.stages):
        row["image_size"] = stage.image_size or run.recipe.input.size
    _save_checkpoint(run, model, row, is_best, epoch)


def _stage_network(run: _Run, model, stage: StageSpec, strategy):
    """The network ``stage`` trains: ``model``, or a copy of it built at the stage's
    ``image_size`` (progressive resizing)."""
    if (stage.image_size or run.recipe.input.size) == run.recipe.input.size:
        return model
    with strategy.scope():
        network = resized_network(
            model, run.recipe, size=stage.image_size, num_classes=len(run.dataset.classes)
        )
    prepare_backbone(split_model(model)[0], stage)  # its batch norms as the copy's
    return network


def _pixels_at(run: _Run, stage: StageSpec) -> ImageTable:
    """The pixels ``stage`` trains on: decoded at its ``image_size`` (once, cached like the
    member's own) or the member's."""
    size = stage.image_size or run.recipe.input.size
    if size == run.recipe.input.size:
        return run.pixels
    if size not in run.resized:
        run.resized[size] = load_images(
            run.dataset,
            size=size,
            crop_borders=run.recipe.input.crop_borders,
            interpolation=run.recipe.input.interpolation,
            cache_dir=Layout(run.options.workspace).image_cache,
        )
    return run.resized[size]


def _stage_rate(stage: StageSpec, epoch: float) -> float:
    """The learning rate ``epoch`` epochs (fractional) into ``stage``: its schedule's, or SWA's
    constant rate once averaging began."""
    swa = stage.swa
    if swa is not None and swa.learning_rate and epoch >= swa.start - 1:
        return swa.learning_rate
    return learning_rate(stage.schedule, base=stage.learning_rate, epoch=epoch, epochs=stage.epochs)


def _validation(run: _Run, model, network, trained, train_x):
    """What is validated after each epoch of a stage, and the step before (precise BN): what
    trains, or, when the stage trains a resized copy, the member's network at its own size,
    given the copy's weights first."""
    options = dict(batch_size=run.recipe.batch_size, max_batches=20, seed=run.options.seed)
    if network is model:
        return trained, lambda: recompute_statistics(trained, train_x, **options)
    pixels = run.pixels.take(run.split.train)

    def before_validation() -> int:
        copy_weights(network, model)
        return recompute_statistics(model, pixels, **options)

    return model, before_validation


def _fit_stage(
    run: _Run,
    model,
    stage: StageSpec,
    *,
    index: int,
    first_epoch: int,
    start_in_stage: int,
    sample_weight_of_class: np.ndarray,
    image_weights: np.ndarray | None = None,
    jit,
    strategy,
) -> bool:
    """Train one stage from ``start_in_stage``; returns False when early stopping ended training."""
    recipe, opts = run.recipe, run.options
    train_ids, val_ids = run.split.train, run.split.val
    y_train, y_val = run.labels("train"), run.labels("val")
    network = _stage_network(run, model, stage, strategy)
    resized = network is not model
    features, head = split_model(network)
    multipliers = prepare_backbone(features, stage)
    use_features = stage.trainable == "head" and not stage.augment and opts.feature_cache
    label = f"stage {index + 1}/{len(recipe.stages)} ({stage.name})"
    console.info(
        f"[bold]{label}[/bold]: {stage.epochs} epoch(s), lr {stage.learning_rate:g}, "
        f"{'backbone frozen' if stage.trainable == 'head' else _trainable_summary(stage)}"
        f"{', features cached' if use_features else ''}"
        f"{f', {stage.image_size} px' if resized else ''}"
    )
    train_x, val_x = _pixels_at(run, stage).take(train_ids), run.pixels.take(val_ids)
    trained = network
    if use_features:
        train_x = features.predict(inference_dataset(train_x, batch_size=128), verbose=0)
        if not resized:
            val_x = features.predict(inference_dataset(val_x, batch_size=128), verbose=0)
        trained = head
    judged, before_validation = _validation(run, model, network, trained, train_x)
    augmenter = None
    if stage.augment and recipe.augment.active and not use_features:
        from zoo.training.augment import build_augmenter

        augmenter = build_augmenter(recipe.augment, seed=opts.seed)
    dataset, steps = training_dataset(
        train_x,
        y_train,
        num_classes=len(run.dataset.classes),
        batch_size=recipe.batch_size,
        sample_weights=sample_weight_of_class[y_train]
        * (1.0 if image_weights is None else image_weights),
        augmenter=augmenter,
        balanced=recipe.sampling == "balanced",
        seed=opts.seed + index,
    )
    with strategy.scope():
        if getattr(trained, "optimizer", None) is None or start_in_stage == 0:
            optimizer = make_optimizer(recipe.optimizer, stage.learning_rate, multipliers)
        else:
            optimizer = trained.optimizer
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
        trained.compile(
            optimizer=optimizer,
            loss=loss,
            metrics=["accuracy"],
            jit_compile=jit,
        )
    monitor = TrainingMonitor(
        predict_val=lambda: predict_probabilities(judged, val_x),
        val_labels=y_val,
        steps=steps,
        batch_size=recipe.batch_size,
        stage_label=label,
        epoch_offset=first_epoch,
        total_epochs=recipe.epochs,
        best_score=run.best_score,
        patience=recipe.early_stopping,
        epochs_since_best=run.epochs_since_best,
        on_checkpoint=lambda epoch, row, best: _end_of_epoch(
            run, model, stage, first_epoch, row, best, epoch
        ),
        before_validation=before_validation,
    )
    schedule = LearningRateSchedule(
        lambda e: _stage_rate(stage, e), steps=steps, initial_epoch=start_in_stage
    )
    if needs_custom_loop(strategy):
        fit_with_strategy(
            trained,
            dataset,
            strategy=strategy,
            loss=loss,
            global_batch=recipe.batch_size,
            steps=steps,
            epochs=stage.epochs,
            initial_epoch=start_in_stage,
            callbacks=[schedule, monitor],
        )
    else:
        trained.fit(
            dataset,
            steps_per_epoch=steps,
            epochs=stage.epochs,
            initial_epoch=start_in_stage,
            shuffle=False,
            callbacks=[schedule, monitor],
            verbose=0,
        )  # tf.data shuffles
    return not trained.stop_training


def _trainable_summary(stage: StageSpec) -> str:
    """How the backbone trains in a stage that unfreezes it."""
    parts = ["all layers train"]
    if stage.lr_multipliers:
        parts = [
            "backbone layer groups at lr × " + "/".join(f"{m:g}" for m in stage.lr_multipliers)
        ]
    if stage.batchnorm == "frozen":
        parts.append("batch norm frozen")
    return ", ".join(parts)


def _load_checkpoint(file: Path):
    """The model of an interrupted run; a missing or damaged file is a :class:`ZooError`."""
    try:
        return keras.saving.load_model(file, safe_mode=True)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ZooError(
            f"--resume: cannot load the checkpoint {file} ({reason}); the run cannot be resumed: "
            f"delete {file.parent} and train again without --resume."
        ) from None


def train(options: TrainOptions) -> Path:
    """Train the member ``options`` describe and return its directory."""
    options.workspace = Path(options.workspace)
    with contextlib.ExitStack() as stack:
        run = _resolve(options, stack)
        try:
            return _train(run)
        except Diverged as exc:
            raise ZooError(f"{exc}; training stopped. {_kept(run)}") from None


def _train(run: _Run) -> Path:
    """Build or load the model, run the stages, save the member."""
    options = run.options
    strategy = make_strategy(options.strategy)
    policy = configure_precision(options.mixed_precision)
    run.replicas, run.precision = strategy.num_replicas_in_sync, policy
    state = run.state
    if state is not None:  # recipe, split and weights came from it in _resolve
        run.history, run.best_epoch, run.best_score = (
            state["history"],
            state["best_epoch"],
            state["best_score"],
        )
        run.epochs_since_best, run.seconds = state["epochs_since_best"], state["seconds"]
        console.info(
            f"Resuming {run.name} after epoch {state['epochs_done']} of {run.recipe.epochs}."
        )
    recipe, dataset = run.recipe, run.dataset
    console.info(
        f"Training [bold]{run.name}[/bold]: recipe {recipe.name} ({recipe.model.backbone}), "
        f"{recipe.input.size} px, {recipe.epochs} epoch(s), batch {recipe.batch_size}, precision {policy}, "
        f"split train {len(run.split.train)} / val {len(run.split.val)} / test {len(run.split.test)}"
    )
    keras.utils.set_random_seed(options.seed)
    with strategy.scope():
        if state is not None:
            import zoo.models.layers  # noqa: F401
            import zoo.training.augment  # noqa: F401
            import zoo.training.finetune  # noqa: F401  (discriminative optimizers)

            model = _load_checkpoint(run.directory / "checkpoint.keras")
        else:
            model, run.weights = build_model(
                recipe, num_classes=len(dataset.classes), weights=run.weights
            )
    console.info(f"  weights: {run.weights}; {model.count_params():,} parameters")
    counts = np.bincount(run.labels("train"), minlength=len(dataset.classes))
    weights_of_class = class_weights(
        counts, scheme=recipe.class_weight, beta=recipe.class_weight_beta
    )
    per_source = _source_weights(run)
    mass = np.bincount(run.labels("train"), weights=per_source, minlength=len(dataset.classes))
    # the prior behind prior correction: the combined training split, as the sources weigh it
    priors = effective_priors(mass, None if recipe.sampling == "balanced" else weights_of_class)
    if recipe.sampling == "balanced":
        priors = np.full(len(counts), 1 / len(counts))
    run.directory.mkdir(parents=True, exist_ok=True)
    run.extras = ExtraMembers.of(recipe, run.name, run.directory, (state or {}).get("extras"))
    jit = {"auto": "auto", "on": True, "off": False}[options.jit_compile]
    if jit == "auto" and not get_backbone(recipe.model.backbone).xla:
        jit = False
    done = state["epochs_done"] if state else 0
    for index, (first, stage) in enumerate(_stage_plan(recipe.stages)):
        if done >= first + stage.epochs:
            continue
        keep_going = _fit_stage(
            run,
            model,
            stage,
            index=index,
            first_epoch=first,
            start_in_stage=done - first if done > first else 0,
            sample_weight_of_class=weights_of_class,
            image_weights=per_source,
            jit=jit,
            strategy=strategy,
        )
        done = first + stage.epochs
        if not keep_going:
            break
    if run.extras is not None:
        _save_extra_members(run, model, counts, weights_of_class, priors)
    model.load_weights(run.directory / "best.weights.h5")
    final = _save_member(run, model, counts, weights_of_class, priors)
    if is_chief():
        shutil.rmtree(run.directory, ignore_errors=True)
    return final


def _save_extra_members(run: _Run, model, counts, weights_of_class, priors) -> None:
    """The run's snapshots and weight average, each saved as a member of its own."""
    for name in run.extras.missing(run.recipe):
        console.warn(f"{name} is not saved: training stopped early, before its epoch.")
    members = run.extras.members(
        model,
        pixels=run.pixels.take(run.split.train),
        batch_size=run.recipe.batch_size,
        seed=run.options.seed,
    )
    for extra in members:
        _save_member(run, model, counts, weights_of_class, priors, extra)


def _source_weights(run: _Run) -> np.ndarray | None:
    """Each training image's source weight (data TOML ``weight``), or None when all are 1."""
    weights = source_weights(run.dataset)
    return None if weights is None else weights.loc[list(run.split.train)].to_numpy()


def _data_record(run: _Run) -> dict:
    """member.json's ``data``: the data set, each source with its split counts, duplicates."""
    record = (run.source or run.dataset).describe()
    if run.dataset.sources:
        counts = split_counts(run.dataset, run.split)
        for source in record["sources"]:
            source["split_counts"] = counts[source["name"]]
    if run.duplicates is not None:
        record["duplicates"] = public(run.duplicates)
    if run.hashes is not None:
        record["train_hashes"] = {
            "file": TRAIN_HASHES_FILE,
            "kind": run.duplicates["kind"] if run.duplicates else None,
            "count": len(run.split.train),
        }
    return record


def _kept(run: _Run) -> str:
    """What a diverged run leaves behind, and what to do."""
    if not run.history:
        return (
            f"No epoch finished, so nothing was kept ({run.directory} is removed on the next "
            "run); lower the learning rate or check the data."
        )
    return (
        f"The last good checkpoint (epoch {run.history[-1]['epoch']}) is kept in {run.directory}; "
        "lower the learning rate and train again after deleting it, or --resume from it."
    )


def _save_member(run: _Run, model, counts, weights_of_class, priors, extra=None) -> Path:
    """Save ``model`` as the run's member, or as ``extra``: (name, provenance in member.json)."""
    name, provenance = extra or (run.name, {})
    classes, labels_of = run.dataset.classes, run.labels
    partition = None
    if run.plan is not None:  # train classes → inference classes by summation
        matrix = run.plan.summation()
        partition = run.plan.record(run.source.class_counts())
        partition["train_counts"] = counts.tolist()
        model = summed_model(model, matrix)
        counts, weights_of_class, priors = summed_priors(counts, weights_of_class, priors, matrix)
        classes = run.plan.inference
        to_inference = matrix.argmax(axis=1)
        labels_of = lambda part: to_inference[run.labels(part)]  # noqa: E731
    predictions, metrics, seconds = {}, {}, {}
    for part in ("val", "test"):  # val first: it traces the predict function, test is timed
        ids = run.split.ids(part)
        start = time.perf_counter()
        probs = predict_probabilities(model, run.pixels.take(ids))
        seconds[part] = time.perf_counter() - start
        inference_rate = len(ids) / max(seconds[part], 1e-9)
        predictions[part] = predictions_frame(ids, probs, classes)
        metrics[part] = headline_metrics(labels_of(part), probs)
    epochs_run = len(run.history)
    seen = sum(r["images_per_second"] * (r["seconds"]) for r in run.history) or 1
    info = {
        "name": name,
        "recipe": run.recipe.name,
        "config": {"recipe": run.recipe.as_dict(), "options": run.options.to_dict()},
        "classes": list(classes),
        "weights": run.weights,
        "weights_provenance": weights_provenance(run.recipe, run.weights),
        "priors": {
            "train_counts": np.asarray(counts).tolist(),
            "train_frequency": (counts / counts.sum()).tolist(),
            "class_weights": np.asarray(weights_of_class).tolist(),
            "effective": list(map(float, priors)),
        },
        "input": {
            **dataclasses.asdict(run.recipe.input),
            "dtype": "float32",
            "range": [0, 255],
            "layout": "NHWC",
        },
        "data": _data_record(run),
        "split": run.split.to_dict(),
        "versions": library_versions(),
        "training": {
            "seconds": run.seconds,
            "best_epoch": run.best_epoch,
            "epochs_run": epochs_run,
            "images_per_second": seen / max(sum(r["seconds"] for r in run.history), 1e-9),
            "parameters": int(model.count_params()),
            "inference_images_per_second": inference_rate,
            "replicas": run.replicas,
            "precision": run.precision,
        },
        "metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if partition is not None:
        info["partition"] = partition
    info.update(provenance)
    if run.history and "image_size" in run.history[0]:  # progressive resizing
        info["training"]["image_sizes"] = [r["image_size"] for r in run.history]
    per_source = _source_weights(run)
    if per_source is not None:  # the counts behind the effective priors, as sources weigh them
        info["priors"]["source_weighted_counts"] = np.bincount(
            labels_of("train"), weights=per_source, minlength=len(classes)
        ).tolist()
    final = Layout(run.options.workspace).member(info["name"])
    if not is_chief():
        return final
    record = MemberRecord.from_dict(info)
    with atomic_directory(final) as tmp:
        without_optimizer(model).save(tmp / MODEL_FILE)  # optimizer state stays in runs/
        record.write(tmp / MEMBER_FILE)
        cache = PredictionCache(tmp, classes)
        model_sha256 = sha256_of(tmp / MODEL_FILE)  # uncached: no .sha256-cache.json here
        if run.hashes is not None:
            order = {image_id: k for k, image_id in enumerate(run.hashes.ids)}
            save_hashes(
                tmp / TRAIN_HASHES_FILE, run.hashes.hashes[[order[i] for i in run.split.train]]
            )
        for part, frame in predictions.items():
            cache.write(
                part,
                frame,
                tta="none",
                model_sha256=model_sha256,
                seconds=seconds[part],
                origin="trainer",
            )
        pd.DataFrame(run.history).to_csv(tmp / "history.csv", index=False)
        _write_calibration(tmp, run, predictions["val"], labels_of("val"), priors)
        atomic_write_text(tmp / "card.md", model_card(info))
    _print_summary(run, info, final)
    return final


def _write_calibration(folder: Path, run: _Run, val: pd.DataFrame, labels, priors) -> None:
    """``calibration.json``: the calibrator and melanoma operating point of the member's
    default outputs (no TTA, prior-corrected), chosen on its validation split."""
    from zoo.scoring.calibrators import write_served_outputs

    corrected = PriorCorrection().fit(np.asarray(priors, dtype=float)).transform(val.to_numpy())
    groups = run.dataset.lesion_groups(val.index)
    write_served_outputs(
        folder,
        classes=list(val.columns),
        tta="none",
        prior_correction=True,
        probabilities=corrected,
        labels=np.asarray(labels),
        groups=None if groups is None else groups.to_numpy(),
    )


def _print_summary(run: _Run, info: dict, final: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{info['name']}", show_edge=False)
    for column in ("split", "images", "balanced acc.", "macro AUC", "accuracy"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for part, m in info["metrics"].items():
        auc = "–" if m["macro_auc"] is None else f"{m['macro_auc']:.3f}"
        table.add_row(
            part, str(m["n_images"]), f"{m['balanced_accuracy']:.3f}", auc, f"{m['accuracy']:.3f}"
        )
    if not console.is_quiet():
        console.console.print(table)
    console.info(
        f"best epoch {run.best_epoch} of {len(run.history)}, {run.seconds:.0f} s of training"
    )
    console.console.print(f"Saved member [bold]{info['name']}[/bold] to {final}")
