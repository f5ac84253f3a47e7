"""From ``TrainOptions`` to a ``ResolvedRun``: every check a run needs before a model is built.

:func:`resolve_run` reads the recipe and the data, fills in the data set's defaults, names the
run, locks and checks its directories, reads the state of a run to resume, checks the weights,
finds near-duplicate images, decodes every image and draws the split; all problems of the data
come in one :class:`DataProblems`. The options it is given are never changed: what it resolved
is in the ``ResolvedRun``'s own copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
from pathlib import Path

import numpy as np
import pandas as pd

from zoo import console
from zoo.data import Dataset, load_dataset
from zoo.data.duplicates import ImageHashes, duplicate_report, image_hashes, merge_duplicates
from zoo.data.images import ImageTable, load_images
from zoo.data.metadata import MetadataEncoding
from zoo.data.splits import Split, check_split_options, keep_together, make_split
from zoo.errors import DataProblems, ZooError
from zoo.models.build import check_weights
from zoo.recipes.recipe import Recipe, get_recipe
from zoo.store import MEMBER_FILE, Layout
from zoo.store.locks import hold
from zoo.store.names import check_name
from zoo.training.extra_members import extra_member_names, made_by
from zoo.training.partition import Plan, plan_partition, relabel
from zoo.training.resume import (
    check_resume_options,
    forget_empty_run,
    given_options,
    read_state,
    resumed_options,
)
from zoo.training.run import ResolvedRun, TrainOptions


def default_name(recipe: str, dataset: Dataset, options: TrainOptions) -> str:
    """``<recipe>.<data>.s<seed>[.f<fold>]``: the name carries the member's identity."""
    name = f"{recipe}.{dataset.name}.s{options.seed}"
    return f"{name}.f{options.fold}" if options.fold is not None else name


def resolve_run(options: TrainOptions, stack: contextlib.ExitStack | None = None) -> ResolvedRun:
    """Recipe, data, defaults, name, run directory, decoded pixels and split.

    Every check runs here, before a model is built: options, the run directory (locked in
    ``stack`` against a second run of the same name; without a stack, only while resolving),
    the state of a run to resume, then the data (see :func:`check_data`).
    """
    if stack is None:
        with contextlib.ExitStack() as local:
            return resolve_run(options, local)
    given = given_options(options)
    if options.name is not None:
        check_name(options.name, what="--name")
    recipe = get_recipe(options.recipe, workspace=options.workspace).with_settings(options.settings)
    check_split_options(fold=options.fold, folds=options.folds)
    options, dataset, source, plan = _training_data(options, recipe)
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
    directory = _claim_directories(stack, options, name)
    state, split = None, None
    if options.resume and directory.exists():
        state, recipe, split = _resumed_state(directory, given, dataset, name=name)
        options, weights = resumed_options(options, state), state["weights"]
    _reserve_extra_members(stack, Layout(options.workspace), recipe, name, resume=state is not None)
    if state is None:
        check_weights(recipe, image_size=recipe.input.size, weights=weights)
    missing_metadata = check_metadata_columns(recipe, dataset)
    hashes, duplicates = _find_duplicates(dataset, options)
    together = merge_duplicates(dataset, duplicates).records["group"]
    pixels, split = check_data(dataset, recipe, options, split, together=together)
    return ResolvedRun(
        metadata=metadata_encoding(recipe, dataset, split.train, missing=missing_metadata),
        options=options,
        recipe=recipe,
        dataset=dataset,
        split=split,
        name=name,
        weights=weights,
        directory=directory,
        pixels=pixels,
        hashes=hashes,
        duplicates=duplicates,
        plan=plan,
        source=source,
        state=state,
    )


def check_metadata_columns(recipe: Recipe, dataset: Dataset) -> list[str]:
    """Before any image is decoded: data without any of the metadata columns the recipe's
    head reads is an error. Returns the ones it lacks (read as missing)."""
    fields = recipe.model.metadata
    columns = dataset.metadata().columns
    missing = [f for f in fields if f not in columns]
    if fields and len(missing) == len(fields):
        raise ZooError(
            f"recipe {recipe.name} reads metadata ({', '.join(fields)}) but data {dataset.spec} "
            "has none of those columns; use data with them (HAM10000, ISIC metadata CSVs) or "
            "--set metadata=[]."
        )
    return missing


def metadata_encoding(
    recipe: Recipe, dataset: Dataset, train_ids, *, missing: list[str] | None = None
) -> MetadataEncoding | None:
    """The encoding of the metadata the recipe's head reads (``metadata``), fitted on the
    training split; None when it reads none. Data without any of those columns is an error;
    a column it lacks (``missing``, when :func:`check_metadata_columns` already ran) is read
    as missing, with a warning."""
    fields = recipe.model.metadata
    if not fields:
        return None
    if missing is None:
        missing = check_metadata_columns(recipe, dataset)
    if missing:
        console.warn(f"data {dataset.spec} has no {', '.join(missing)} column: read as missing.")
    encoding = MetadataEncoding.fit(fields, dataset.metadata(train_ids))
    if encoding.width == 0:  # only site, and no training image has a known one
        raise ZooError(
            f"recipe {recipe.name} reads only site, but no training image of data {dataset.spec} "
            "has a known site; use data with sites or --set metadata=[] (or add age, sex)."
        )
    console.info(f"  metadata inputs: {', '.join(encoding.column_names())}")
    return encoding


def _training_data(
    options: TrainOptions, recipe: Recipe
) -> tuple[TrainOptions, Dataset, Dataset | None, Plan | None]:
    """The data set the run trains on: read, its notes shown, checked for two classes and,
    with ``--partition``, relabelled; with ``options`` given the data set's defaults. Also
    the data as read and the partition plan (None without ``--partition``)."""
    images = Path(options.images) if options.images else None
    dataset = load_dataset(options.data, workspace=options.workspace, images=images)
    options = _with_data_set_defaults(options, dataset, recipe)
    for note in dataset.notes:
        console.info(f"  note: {note}")
    _check_classes(dataset)
    dataset, source, plan = _partitioned(dataset, options.partition)
    return options, dataset, source, plan


def _with_data_set_defaults(
    options: TrainOptions, dataset: Dataset, recipe: Recipe
) -> TrainOptions:
    """``options`` with the demo set's small image size and epochs where neither the options
    nor ``--set`` give them; other data sets have no defaults of their own."""
    if not dataset.is_demo:
        return options
    console.info(
        "[bold yellow]Using the embedded demo data set[/bold yellow] (synthetic lesion-like images, "
        "7 classes, 420 images) — pass --data to train on real images.",
        markup=True,
    )
    defaults, changes = dataset.defaults, {}
    settings = [s.partition("=")[0].strip() for s in options.settings]  # --set wins too
    if options.image_size is None and "input.size" not in settings:
        changes["image_size"] = max(defaults["image_size"], recipe.input.min_size)
    if options.epochs is None and not any(fnmatch.fnmatch(k, "stages.*.epochs") for k in settings):
        changes["epochs"] = defaults["epochs"]
    return dataclasses.replace(options, **changes)


def _partitioned(
    dataset: Dataset, partition: str | None
) -> tuple[Dataset, Dataset | None, Plan | None]:
    """``--partition``: the data relabelled into the taxonomy's training classes, the data as
    read, and the plan; without it, the data unchanged."""
    if not partition:
        return dataset, None, None
    plan = plan_partition(dataset.labelled().records["label"], partition)
    console.info(
        f"  partition (max_class_size {plan.max_class_size}): {len(plan.training)} training "
        f"classes ({', '.join(plan.training)}) summed into {len(plan.inference)} inference "
        "classes"
    )
    return relabel(dataset, plan), dataset, plan


def _claim_directories(stack: contextlib.ExitStack, options: TrainOptions, name: str) -> Path:
    """Lock ``members/<name>`` (covering ``runs/<name>``) and return the run directory; an
    existing member, or an interrupted run without ``--resume``, is an error."""
    layout = Layout(options.workspace)
    directory, member_dir = layout.run(name), layout.member(name)
    stack.enter_context(hold(member_dir, what=f"zoo train {name}"))
    forget_empty_run(directory, resume=options.resume)
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
    return directory


def _resumed_state(
    directory: Path, given: dict, dataset: Dataset, *, name: str
) -> tuple[dict, Recipe, Split]:
    """The interrupted run's state, recipe and split, once the options given with ``--resume``
    and the data are known to agree with it."""
    state, recipe, split = read_state(directory / "state.json")
    check_resume_options(state, recipe, given, file=directory / "state.json")
    if state["fingerprint"] != dataset.fingerprint:
        raise ZooError(
            f"--resume: the data changed since {name} started (fingerprint "
            f"{state['fingerprint']} → {dataset.fingerprint}); start a new run."
        )
    return state, recipe, split


def _reserve_extra_members(
    stack: contextlib.ExitStack, layout: Layout, recipe: Recipe, run_name: str, *, resume: bool
) -> None:
    """Lock the directories of the run's snapshot and SWA members (see
    :func:`_reserve_extra_member`)."""
    for name in extra_member_names(recipe, run_name):
        _reserve_extra_member(stack, layout, name, run_name=run_name, resume=resume)


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


def check_data(
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
