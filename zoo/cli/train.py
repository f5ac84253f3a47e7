"""``zoo train``: Train one member and save it in the workspace."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli.options import (
    BATCH_SIZE_HELP,
    IMAGE_SIZE_HELP,
    add_command,
    add_common,
    batch_size,
    image_size,
    positive_int,
    seed,
)

NEEDS_TENSORFLOW = True


def add_options(sub) -> None:
    """``zoo train``'s options."""
    p = add_command(sub, "train", "train one member and save it in the workspace")
    p.add_argument("recipe", help="recipe name (see zoo recipes) or a recipe file (FILE.toml)")
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one recipe setting, checked as in the file; repeatable, e.g. "
        "--set input.size=96 --set augment.rotation=90 --set stages.1.epochs=2",
    )
    p.add_argument(
        "--data",
        metavar="SPEC",
        action="append",
        help="ham10000:DIR, isic:CSV, folder:DIR, csv:FILE, demo or a data TOML (default: "
        "demo); repeat it to train on several sources at once",
    )
    p.add_argument(
        "--images",
        metavar="DIR",
        help="image folder for isic:/csv: data (default: beside the CSV)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        help="total epochs, shared among the recipe's stages (default: the recipe's; 6 on "
        "demo data)",
    )
    p.add_argument("--batch-size", type=batch_size, help=BATCH_SIZE_HELP)
    p.add_argument("--image-size", type=image_size, metavar="PX", help=IMAGE_SIZE_HELP)
    p.add_argument(
        "--crop-borders",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="crop the dark border of dermoscopic images (default: the recipe's "
        "[input] crop_borders)",
    )
    p.add_argument(
        "--weights",
        metavar="imagenet|none|auto|PATH",
        help="backbone weights (default: the recipe's; "
        "ImageNet recipes use auto = ImageNet when available, else random with a warning)",
    )
    p.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seed of initialisation, shuffling and augmentation",
    )
    p.add_argument(
        "--split-seed",
        type=seed,
        default=0,
        help="seed of the train/val/test split",
    )
    p.add_argument(
        "--fold",
        type=int,
        help="validation fold K of --folds N, test part unchanged (default: no folds, a "
        "70/10/20 split)",
    )
    p.add_argument("--folds", type=int, help="number of folds (default: no folds)")
    p.add_argument(
        "--partition",
        metavar="max_class_size=N[,taxonomy=FILE]",
        help="Esteva's taxonomy partition: train on the tree's nodes with at most N images "
        "(fine labels, e.g. --data demo:fine) and answer in its inference classes by summing "
        "(default taxonomy: zoo/scoring/taxonomy.toml)",
    )
    p.add_argument("--name", help="member name (default: RECIPE.DATA.sSEED[.fK])")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
    runtime_options(p)
    add_common(p)


def runtime_options(p) -> None:
    """``zoo train``'s options for the hardware: precision, tf.distribute, XLA, feature cache."""
    p.add_argument(
        "--mixed-precision", action="store_true", help="mixed_float16 on GPU, mixed_bfloat16 on CPU"
    )
    p.add_argument(
        "--strategy",
        default="default",
        choices=["default", "mirrored", "multi-worker"],
        help="tf.distribute strategy",
    )
    p.add_argument(
        "--jit-compile", default="auto", choices=["auto", "on", "off"], help="XLA compilation"
    )
    p.add_argument(
        "--no-feature-cache",
        action="store_true",
        help="run the frozen backbone every epoch instead of caching its features",
    )


def run(args, workspace: Path) -> int:
    from zoo.data.combined import join_specs
    from zoo.training.trainer import TrainOptions
    from zoo.training.trainer import train as run_training

    options = TrainOptions(
        recipe=args.recipe,
        workspace=workspace,
        data=join_specs(args.data or []),
        images=args.images,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        crop_borders=args.crop_borders,
        weights=args.weights,
        seed=args.seed,
        split_seed=args.split_seed,
        fold=args.fold,
        folds=args.folds,
        name=args.name,
        resume=args.resume,
        mixed_precision=args.mixed_precision,
        strategy=args.strategy,
        jit_compile=args.jit_compile,
        feature_cache=not args.no_feature_cache,
        settings=tuple(args.settings),
        partition=args.partition,
    )
    run_training(options)
    return 0
