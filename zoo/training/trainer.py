"""Train one member: data → split → cached pixels → stages of fit → saved member.

The run lives in ``<workspace>/runs/<name>/`` while it trains (a checkpoint and ``state.json``
after every epoch, so ``--resume`` continues where it stopped) and becomes
``<workspace>/members/<name>/`` in one rename when it is complete.

This module builds the model and runs the stages. The steps around them have modules of their
own: the options and the run's records (:mod:`zoo.training.run`), every check before a model
is built (:mod:`zoo.training.resolve`), what ``--resume`` goes on from
(:mod:`zoo.training.resume`) and the saved member (:mod:`zoo.training.member_writer`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from zoo import console
from zoo.console import escape
from zoo.data.images import ImageTable, load_images
from zoo.data.pipeline import inference_dataset, training_dataset
from zoo.errors import ZooError
from zoo.models.backbones import get_backbone
from zoo.models.build import build_model, saved_bytes, split_model
from zoo.recipes.recipe import Recipe
from zoo.recipes.schedules import learning_rate
from zoo.recipes.specs import StageSpec
from zoo.scoring.priors import effective_priors
from zoo.store import Layout
from zoo.store.workspace import atomic_path, atomic_write_json
from zoo.training.batchnorm import recompute_statistics
from zoo.training.class_weights import class_weights
from zoo.training.distributed import fit_with_strategy, needs_custom_loop
from zoo.training.extra_members import ExtraMembers
from zoo.training.finetune import make_optimizer, prepare_backbone
from zoo.training.member_writer import predict_probabilities, save_member
from zoo.training.monitor import Diverged, LearningRateSchedule, TrainingMonitor
from zoo.training.option_checks import check_train_options
from zoo.training.resize import copy_weights, resized_network
from zoo.training.resolve import default_name, resolve_run
from zoo.training.resume import check_resume_options, load_checkpoint, state_record
from zoo.training.run import ClassBalance, ResolvedRun, Run, TrainOptions
from zoo.training.runtime import configure_precision, is_chief, make_strategy

__all__ = ["TrainOptions", "default_name", "predict_probabilities", "train"]

# The steps' names from before they moved to zoo.training.resolve and zoo.training.resume;
# tests call them here.
_resolve = resolve_run
_check_resume_options = check_resume_options


def train(options: TrainOptions) -> Path:
    """Train the member ``options`` describe and return its directory."""
    check_train_options(options)  # before any work
    options = dataclasses.replace(options, workspace=Path(options.workspace))
    with contextlib.ExitStack() as stack:
        return _train(resolve_run(options, stack))


def _train(setup: ResolvedRun) -> Path:
    """Build or load the model, run the stages, save the member and its extra members."""
    strategy = make_strategy(setup.options.strategy)
    precision = configure_precision(setup.options.mixed_precision)
    _announce(setup, precision)
    keras.utils.set_random_seed(setup.options.seed)
    model, weights = _model(setup, strategy)
    balance = _class_balance(setup)
    setup.directory.mkdir(parents=True, exist_ok=True)
    extras = (setup.state or {}).get("extras")
    run = Run(
        setup,
        weights=weights,
        replicas=strategy.num_replicas_in_sync,
        precision=precision,
        extras=ExtraMembers.of(setup.recipe, setup.name, setup.directory, extras),
        **Run.progress_of(setup.state),
    )
    try:
        _run_stages(run, model, balance, strategy=strategy)
    except Diverged as exc:
        raise ZooError(f"{exc}; training stopped. {_kept(run)}") from None
    if run.extras is not None:
        _save_extra_members(run, model, balance)
    model.load_weights(setup.directory / "best.weights.h5")
    final = save_member(run, model, balance)
    if is_chief():
        shutil.rmtree(setup.directory, ignore_errors=True)
    return final


def _announce(setup: ResolvedRun, precision: str) -> None:
    """Say what is trained (and, for ``--resume``, from which epoch on)."""
    recipe, split = setup.recipe, setup.split
    if setup.state is not None:  # recipe, split and weights came from it in resolve_run
        console.info(
            f"Resuming {setup.name} after epoch {setup.state['epochs_done']} of {recipe.epochs}."
        )
    console.info(
        f"Training [bold]{escape(setup.name)}[/bold]: recipe {escape(recipe.name)} "
        f"({recipe.model.backbone}), "
        f"{recipe.input.size} px, {recipe.epochs} epoch(s), batch {recipe.batch_size}, precision {precision}, "
        f"split train {len(split.train)} / val {len(split.val)} / test {len(split.test)}",
        markup=True,
    )


def _model(setup: ResolvedRun, strategy) -> tuple[keras.Model, str]:
    """The interrupted run's checkpoint, or a new network; and the weights it started from."""
    with strategy.scope():
        if setup.state is not None:
            model, weights = load_checkpoint(setup.directory / "checkpoint.keras"), setup.weights
        else:
            model, weights = build_model(
                setup.recipe,
                num_classes=len(setup.dataset.classes),
                weights=setup.weights,
                metadata_width=setup.metadata.width if setup.metadata else 0,
            )
    console.info(f"  weights: {weights}; {model.count_params():,} parameters")
    return model, weights


def _class_balance(setup: ResolvedRun) -> ClassBalance:
    """Class counts and loss weights of the training split, each image's source weight, and
    the prior behind prior correction: the training split as the sources and sampling weigh it."""
    recipe, classes = setup.recipe, setup.dataset.classes
    labels = setup.labels("train")
    counts = np.bincount(labels, minlength=len(classes))
    weights_of_class = class_weights(
        counts, scheme=recipe.class_weight, beta=recipe.class_weight_beta
    )
    per_source = setup.source_weights()
    mass = np.bincount(labels, weights=per_source, minlength=len(classes))
    priors = effective_priors(mass, None if recipe.sampling == "balanced" else weights_of_class)
    if recipe.sampling == "balanced":
        priors = np.full(len(counts), 1 / len(counts))
    return ClassBalance(counts, weights_of_class, per_source, priors)


def _run_stages(run: Run, model, balance: ClassBalance, *, strategy) -> None:
    """Every stage not yet done, from where an interrupted run stopped; early stopping ends
    them all."""
    jit = _jit_compile(run.setup)
    done = run.setup.state["epochs_done"] if run.setup.state else 0
    for index, (first, stage) in enumerate(_stage_plan(run.setup.recipe.stages)):
        if done >= first + stage.epochs:
            continue
        keep_going = _fit_stage(
            run,
            model,
            stage,
            index=index,
            first_epoch=first,
            start_in_stage=done - first if done > first else 0,
            balance=balance,
            jit=jit,
            strategy=strategy,
        )
        done = first + stage.epochs
        if not keep_going:
            break


def _jit_compile(setup: ResolvedRun) -> bool | str:
    """``--jit-compile`` for Keras: ``auto`` turns XLA off for backbones that do not take it."""
    jit = {"auto": "auto", "on": True, "off": False}[setup.options.jit_compile]
    if jit == "auto" and not get_backbone(setup.recipe.model.backbone).xla:
        jit = False
    return jit


def _stage_plan(stages: tuple[StageSpec, ...]) -> list[tuple[int, StageSpec]]:
    """(first global epoch, stage) for every stage."""
    plan, start = [], 0
    for stage in stages:
        plan.append((start, stage))
        start += stage.epochs
    return plan


def _fit_stage(
    run: Run,
    model,
    stage: StageSpec,
    *,
    index: int,
    first_epoch: int,
    start_in_stage: int,
    balance: ClassBalance,
    jit,
    strategy,
) -> bool:
    """Train one stage from ``start_in_stage``; returns False when early stopping ended training."""
    setup = run.setup
    label = f"stage {index + 1}/{len(setup.recipe.stages)} ({stage.name})"
    trainee = _trainee(run, model, stage, label=label, strategy=strategy)
    dataset, steps = _stage_dataset(setup, stage, trainee, index=index, balance=balance)
    loss = _compile(trainee, setup.recipe, stage, start_in_stage, jit=jit, strategy=strategy)
    monitor = _stage_monitor(
        run, model, stage, trainee, steps=steps, label=label, first_epoch=first_epoch
    )
    schedule = LearningRateSchedule(
        lambda e: _stage_rate(stage, e), steps=steps, initial_epoch=start_in_stage
    )
    _fit(
        trainee.trained,
        dataset,
        strategy=strategy,
        loss=loss,
        global_batch=setup.recipe.batch_size,
        steps=steps,
        epochs=stage.epochs,
        initial_epoch=start_in_stage,
        callbacks=[schedule, monitor],
    )
    return not trainee.trained.stop_training


@dataclass(frozen=True)
class _Trainee:
    """What a stage trains, on which inputs, and what is validated after each epoch."""

    trained: keras.Model  # the stage's network, or its head when the stage trains on features
    multipliers: object  # the backbone's learning-rate multipliers (prepare_backbone)
    cached: bool  # the frozen backbone's features computed once, the head trained on them
    train_x: np.ndarray
    val_x: np.ndarray
    judged: keras.Model  # what validation scores
    before_validation: Callable[[], object]  # precise batch-norm statistics (and weights) first
    # the encoded metadata beside train_x / val_x, for a network that reads it (None when
    # there is none, or when it is already joined to cached features)
    train_metadata: np.ndarray | None = None
    val_metadata: np.ndarray | None = None


def _trainee(run: Run, model, stage: StageSpec, *, label: str, strategy) -> _Trainee:
    """Prepare what ``stage`` trains (announced as ``label``): the network at the stage's
    image size, its backbone frozen or not, and its inputs, features when they can be cached."""
    setup = run.setup
    network = _stage_network(setup, model, stage, strategy)
    resized = network is not model
    features, head = split_model(network)
    multipliers = prepare_backbone(features, stage)
    cached = stage.trainable == "head" and not stage.augment and setup.options.feature_cache
    console.info(_stage_line(label, stage, cached=cached, resized=resized), markup=True)
    train_x, val_x, train_meta, val_meta = _stage_inputs(
        run, stage, features if cached else None, resized=resized
    )
    trained = head if cached else network
    judged, before_validation = _validation(setup, model, network, trained, train_x)
    return _Trainee(
        trained,
        multipliers,
        cached,
        train_x,
        val_x,
        judged,
        before_validation,
        train_metadata=train_meta,
        val_metadata=val_meta,
    )


def _stage_line(label: str, stage: StageSpec, *, cached: bool, resized: bool) -> str:
    """The line that opens a stage: epochs, learning rate, what trains, at which size."""
    return (
        f"[bold]{label}[/bold]: {stage.epochs} epoch(s), lr {stage.learning_rate:g}, "
        f"{'backbone frozen' if stage.trainable == 'head' else _trainable_summary(stage)}"
        f"{', features cached' if cached else ''}"
        f"{f', {stage.image_size} px' if resized else ''}"
    )


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


def _stage_network(setup: ResolvedRun, model, stage: StageSpec, strategy):
    """The network ``stage`` trains: ``model``, or a copy of it built at the stage's
    ``image_size`` (progressive resizing)."""
    if (stage.image_size or setup.recipe.input.size) == setup.recipe.input.size:
        return model
    with strategy.scope():
        network = resized_network(
            model, setup.recipe, size=stage.image_size, num_classes=len(setup.dataset.classes)
        )
    prepare_backbone(split_model(model)[0], stage)  # its batch norms as the copy's
    return network


def _stage_inputs(run: Run, stage: StageSpec, features, *, resized: bool):
    """The training and validation inputs of a stage, and the metadata beside each: pixels,
    or, given the frozen backbone's ``features``, what it computes from them (once), joined
    to the metadata as the head reads them. A resized stage is validated by the member's
    network, on pixels at the member's size."""
    setup = run.setup
    train_x = _pixels_at(run, stage).take(setup.split.train)
    val_x = setup.pixels.take(setup.split.val)
    train_meta = setup.metadata_inputs(setup.split.train)
    val_meta = setup.metadata_inputs(setup.split.val)
    if features is not None:
        train_x = _joined(
            features.predict(inference_dataset(train_x, batch_size=128), verbose=0), train_meta
        )
        train_meta = None
        if not resized:
            val_x = _joined(
                features.predict(inference_dataset(val_x, batch_size=128), verbose=0), val_meta
            )
            val_meta = None
    return train_x, val_x, train_meta, val_meta


def _joined(features: np.ndarray, metadata: np.ndarray | None) -> np.ndarray:
    """Cached features as the head reads them: followed by the metadata, when there is any."""
    if metadata is None:
        return features
    return np.concatenate([np.asarray(features, np.float32), metadata], axis=1)


def _pixels_at(run: Run, stage: StageSpec) -> ImageTable:
    """The pixels ``stage`` trains on: decoded at its ``image_size`` (once, cached like the
    member's own) or the member's."""
    setup = run.setup
    size = stage.image_size or setup.recipe.input.size
    if size == setup.recipe.input.size:
        return setup.pixels
    if size not in run.resized:
        run.resized[size] = load_images(
            setup.dataset,
            size=size,
            crop_borders=setup.recipe.input.crop_borders,
            interpolation=setup.recipe.input.interpolation,
            cache_dir=Layout(setup.options.workspace).image_cache,
        )
    return run.resized[size]


def _validation(setup: ResolvedRun, model, network, trained, train_x):
    """What is validated after each epoch of a stage, and the step before (precise BN): what
    trains, or, when the stage trains a resized copy, the member's network at its own size,
    given the copy's weights first."""
    options = dict(batch_size=setup.recipe.batch_size, max_batches=20, seed=setup.options.seed)
    if network is model:
        return trained, lambda: recompute_statistics(trained, train_x, **options)
    pixels = setup.pixels.take(setup.split.train)

    def before_validation() -> int:
        copy_weights(network, model)
        return recompute_statistics(model, pixels, **options)

    return model, before_validation


def _stage_dataset(
    setup: ResolvedRun, stage: StageSpec, trainee: _Trainee, *, index: int, balance: ClassBalance
):
    """The stage's tf.data pipeline and its steps per epoch: class- and source-weighted (or
    class-balanced) batches, augmented in the graph unless the stage trains on features."""
    recipe = setup.recipe
    augmenter = None
    if stage.augment and recipe.augment.active and not trainee.cached:
        from zoo.training.augment import build_augmenter

        augmenter = build_augmenter(recipe.augment, seed=setup.options.seed)
    y_train = setup.labels("train")
    image_weights = 1.0 if balance.image_weights is None else balance.image_weights
    return training_dataset(
        trainee.train_x,
        y_train,
        num_classes=len(setup.dataset.classes),
        batch_size=recipe.batch_size,
        sample_weights=balance.class_weights[y_train] * image_weights,
        augmenter=augmenter,
        balanced=recipe.sampling == "balanced",
        seed=setup.options.seed + index,
        metadata=trainee.train_metadata,
    )


def _compile(
    trainee: _Trainee, recipe: Recipe, stage: StageSpec, start_in_stage: int, *, jit, strategy
):
    """Compile what trains: a new optimizer at the stage's start (the one it has when an
    interrupted stage goes on), the recipe's label smoothing; returns the loss."""
    trained = trainee.trained
    with strategy.scope():
        if getattr(trained, "optimizer", None) is None or start_in_stage == 0:
            optimizer = make_optimizer(recipe.optimizer, stage.learning_rate, trainee.multipliers)
        else:
            optimizer = trained.optimizer
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
        trained.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=jit)
    return loss


def _fit(
    trained, dataset, *, strategy, loss, global_batch, steps, epochs, initial_epoch, callbacks
):
    """Run the epochs: Keras ``fit``, or zoo's loop under a strategy ``fit`` cannot drive."""
    if needs_custom_loop(strategy):
        fit_with_strategy(
            trained,
            dataset,
            strategy=strategy,
            loss=loss,
            global_batch=global_batch,
            steps=steps,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
        )
    else:
        trained.fit(
            dataset,
            steps_per_epoch=steps,
            epochs=epochs,
            initial_epoch=initial_epoch,
            shuffle=False,
            callbacks=callbacks,
            verbose=0,
        )  # tf.data shuffles


def _stage_monitor(
    run: Run,
    model,
    stage: StageSpec,
    trainee: _Trainee,
    *,
    steps: int,
    label: str,
    first_epoch: int,
) -> TrainingMonitor:
    """The stage's epoch monitor: it validates the trainee, goes on from the run's best score
    so far, and ends each epoch with :func:`_end_of_epoch`."""
    setup = run.setup
    return TrainingMonitor(
        predict_val=lambda: predict_probabilities(
            trainee.judged, trainee.val_x, metadata=trainee.val_metadata
        ),
        val_labels=setup.labels("val"),
        steps=steps,
        batch_size=setup.recipe.batch_size,
        stage_label=label,
        epoch_offset=first_epoch,
        total_epochs=setup.recipe.epochs,
        best_score=run.best_score,
        patience=setup.recipe.early_stopping,
        epochs_since_best=run.epochs_since_best,
        on_checkpoint=lambda epoch, row, best: _end_of_epoch(
            run, model, stage, first_epoch, row, best, epoch
        ),
        before_validation=trainee.before_validation,
    )


def _stage_rate(stage: StageSpec, epoch: float) -> float:
    """The learning rate ``epoch`` epochs (fractional) into ``stage``: its schedule's, or SWA's
    constant rate once averaging began."""
    swa = stage.swa
    if swa is not None and swa.learning_rate and epoch >= swa.start - 1:
        return swa.learning_rate
    return learning_rate(stage.schedule, base=stage.learning_rate, epoch=epoch, epochs=stage.epochs)


def _end_of_epoch(
    run: Run, model, stage: StageSpec, first_epoch: int, row: dict, is_best: bool, epoch: int
) -> None:
    """Once an epoch is validated: snapshot and weight average (extra members), then the
    checkpoint; the history records each epoch's image size when a stage has its own."""
    recipe = run.setup.recipe
    if run.extras is not None:
        run.extras.after_epoch(model, stage, epoch_in_stage=epoch - first_epoch, epoch=epoch)
    if any(s.image_size for s in recipe.stages):
        row = {**row, "image_size": stage.image_size or recipe.input.size}
    _save_checkpoint(run, model, row, is_best, epoch)


def _save_checkpoint(run: Run, model, row: dict, is_best: bool, epoch: int) -> None:
    """Record the validated epoch, then write what ``--resume`` goes on from: the best
    weights (when the epoch is the best so far), the checkpoint and ``state.json``."""
    run.record_epoch(row, is_best=is_best, epoch=epoch)
    directory = run.setup.directory
    if is_best:
        with atomic_path(
            directory / "best.weights.h5", suffix=".weights.h5", needs_bytes=saved_bytes(model)
        ) as tmp:
            model.save_weights(tmp)
    needs = saved_bytes(model, optimizer=True)
    with atomic_path(directory / "checkpoint.keras", suffix=".keras", needs_bytes=needs) as tmp:
        model.save(tmp)
    atomic_write_json(run.setup.state_file, state_record(run, epochs_done=epoch))


def _save_extra_members(run: Run, model, balance: ClassBalance) -> None:
    """The run's snapshots and weight average, each saved as a member of its own."""
    setup = run.setup
    for name in run.extras.missing(setup.recipe):
        console.warn(f"{name} is not saved: training stopped early, before its epoch.")
    members = run.extras.members(
        model,
        pixels=setup.pixels.take(setup.split.train),
        batch_size=setup.recipe.batch_size,
        seed=setup.options.seed,
    )
    for extra in members:
        save_member(run, model, balance, extra)


def _kept(run: Run) -> str:
    """What a diverged run leaves behind, and what to do."""
    directory = run.setup.directory
    if not run.history:
        return (
            f"No epoch finished, so nothing was kept ({directory} is removed on the next "
            "run); lower the learning rate or check the data."
        )
    return (
        f"The last good checkpoint (epoch {run.history[-1]['epoch']}) is kept in {directory}; "
        "lower the learning rate and train again after deleting it, or --resume from it."
    )
