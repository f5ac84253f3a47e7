"""``python -m zoo`` / ``zoo``: parse, dispatch, turn bad input into one line and exit status 2.

Thin by design (STYLE.md): every subcommand lives in its own module; this file only knows
their options. Exit status: 0 success, 2 bad input (one-line message), 1 internal failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from zoo.errors import ZooError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer (0, 1, 2, …), got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer (0, 1, 2, …), got {text!r}"
        )
    return value


def _seed(text: str) -> int:
    """A seed: an integer in [0, 2**32 - 1], the range NumPy and TensorFlow accept."""
    value = _non_negative_int(text)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to 4294967295, got {text!r}")
    return value


def _common(parser: argparse.ArgumentParser, *, out_is_workspace: bool = True) -> None:
    parser.add_argument(
        "--workspace", metavar="DIR", help="workspace folder (default: $ZOO_HOME or ./zoo-runs)"
    )
    if out_is_workspace:
        parser.add_argument("--out", metavar="DIR", help="workspace folder (same as --workspace)")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars or tables (for scripts)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo", description="Keras model zoo for skin-lesion classification."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("recipes", help="table of registered recipes")
    _common(p)

    p = sub.add_parser("train", help="train one member and save it")
    p.add_argument("recipe", help="recipe name (see zoo recipes)")
    p.add_argument(
        "--data",
        metavar="SPEC",
        help="ham10000:DIR, isic:CSV, folder:DIR, csv:FILE or demo (default)",
    )
    p.add_argument("--images", metavar="DIR", help="image folder for isic:/csv: data")
    p.add_argument(
        "--epochs", type=_positive_int, help="total epochs, shared among the recipe's stages"
    )
    p.add_argument("--batch-size", type=_positive_int, help="global batch size")
    p.add_argument("--image-size", type=_positive_int, metavar="PX", help="input size in pixels")
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
        type=_seed,
        default=0,
        help="seed of initialisation, shuffling and augmentation",
    )
    p.add_argument(
        "--split-seed",
        type=_seed,
        default=0,
        help="seed of the train/val/test split (default 0)",
    )
    p.add_argument("--fold", type=int, help="validation fold K of --folds N (test part unchanged)")
    p.add_argument("--folds", type=int, help="number of folds")
    p.add_argument("--name", help="member name (default RECIPE.DATA.sSEED[.fK])")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
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
    _common(p)

    p = sub.add_parser("members", help="table of saved members")
    _common(p)

    p = sub.add_parser(
        "evaluate", help="score a member or ensemble; writes truth, predictions, metrics, plots"
    )
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument(
        "--data", metavar="SPEC", help="data set (default: the one the target was trained on)"
    )
    p.add_argument("--images", metavar="DIR", help="image folder for isic:/csv: data")
    p.add_argument(
        "--split",
        default=None,
        choices=["test", "val", "all"],
        help="which part (default: test on the training data, all on other data)",
    )
    p.add_argument(
        "--tta", default=None, metavar="SCHEME", help="none, steppan, dihedral or rotations:N"
    )
    p.add_argument("--no-prior-correction", action="store_true", help="score raw softmax outputs")
    p.add_argument(
        "--target-priors",
        metavar="FILE|uniform",
        help='prior correction towards these class priors: JSON {"class": prior} or uniform '
        "(the default)",
    )
    p.add_argument("--label-map", metavar="FILE", help='JSON {"source label": "model class"}')
    p.add_argument(
        "--ignore-unmapped",
        action="store_true",
        help="drop images whose label the map does not cover",
    )
    p.add_argument(
        "--task", metavar="NAME", help="binary task: melanocytic, epidermal or malignant"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (0 = none)"
    )
    p.add_argument("--out", metavar="DIR", help="output folder")
    _common(p, out_is_workspace=False)

    p = sub.add_parser("predict", help="class probabilities for images or folders (ISIC CSV)")
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument(
        "--tta", default=None, metavar="SCHEME", help="none, steppan, dihedral or rotations:N"
    )
    p.add_argument("--no-prior-correction", action="store_true", help="raw softmax outputs")
    p.add_argument(
        "--target-priors",
        metavar="FILE|uniform",
        help='prior correction towards these class priors: JSON {"class": prior} or uniform '
        "(the default)",
    )
    p.add_argument("--out", metavar="FILE.csv", help="output CSV (default: standard output)")
    _common(p, out_is_workspace=False)

    p = sub.add_parser("ensemble", help="ensembles of saved members")
    ens = p.add_subparsers(dest="ensemble_command", required=True, metavar="ACTION")
    b = ens.add_parser("build", help="build an ensemble from a definition file")
    b.add_argument("spec", metavar="FILE.toml", help="ensemble definition (see ensembles/)")
    _common(b)

    p = sub.add_parser("leaderboard", help="publish the comparison of all members and ensembles")
    p.add_argument("--out", metavar="DIR", help="output folder (default <workspace>/leaderboard)")
    p.add_argument("--data", metavar="SPEC", help="only entries evaluated on this data set")
    _common(p, out_is_workspace=False)
    return parser


NAME_MAX = 255  # bytes in one file name on Linux and macOS


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse text no option or argument can take: an empty value, a NUL byte, or a path part
    longer than a file name can be (the operating system would refuse it later, less clearly)."""
    for key, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if not isinstance(text, str):
                continue
            option = (
                key
                if key in ("recipe", "target", "paths", "spec")
                else f"--{key.replace('_', '-')}"
            )
            if not text.strip():
                raise ZooError(f"{option}: the value is empty; give one or leave the option out.")
            if "\x00" in text:
                raise ZooError(f"{option}: the value contains a NUL byte; got {text!r}.")
            if any(len(part.encode()) > NAME_MAX for part in text.split("/")):
                raise ZooError(
                    f"{option}: a file or folder name has at most {NAME_MAX} bytes; got "
                    f"{text[:40]!r}… ({len(text)} characters)."
                )


def workspace_of(args) -> Path:
    from zoo.workspace import resolve_workspace

    out = getattr(args, "workspace", None)
    if out is None and args.command in ("recipes", "train", "members", "ensemble"):
        out = getattr(args, "out", None)
    return resolve_workspace(out)


def dispatch(args) -> int:
    from zoo import commands

    handler = {
        "recipes": commands.recipes,
        "train": commands.train,
        "members": commands.members,
        "evaluate": commands.evaluate,
        "predict": commands.predict,
        "ensemble": commands.ensemble,
        "leaderboard": commands.leaderboard,
    }[args.command]
    return handler(args, workspace_of(args)) or 0


TENSORFLOW_COMMANDS = ("recipes", "train", "evaluate", "predict")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 silenced: its C++ start-up lines (oneDNN,
    absl) ignore TF_CPP_MIN_LOG_LEVEL. A failed import still raises as usual."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    try:
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no file descriptor 2 to silence
        return
    os.dup2(null, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from zoo import console

    if args.command in TENSORFLOW_COMMANDS:
        _import_tensorflow_quietly()

    console.set_quiet(args.quiet)
    try:
        check_arguments(args)
        return dispatch(args)
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted. A training run continues with the same command and --resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
