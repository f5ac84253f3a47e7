"""``python -m zoo`` / ``zoo``: parse, dispatch, turn bad input into one line and exit status 2.

Thin by design: every subcommand lives in its own module; this file only knows their
options. ``--workspace`` is the workspace in every command, ``--out`` the output path of the
commands that write one (evaluate, predict, leaderboard). Exit status: 0 success, 2 bad input
(one-line message), 1 internal failure.
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


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 0 to 65535, got {text!r}")
    return value


WORKSPACE_HELP = "workspace folder (default: $ZOO_HOME, else ./zoo-runs)"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default: argparse's value, or the help's own words."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default is not None and action.default is not False
        shown = shown and action.default != argparse.SUPPRESS
        if shown and "default" not in text and action.option_strings:
            return f"{text} (default: %(default)s)"
        return text


class _NoOutput(argparse.Action):
    """``--out`` on a command that writes into the workspace: one line saying what to use."""

    def __call__(self, parser, namespace, values, option_string=None):
        command = parser.prog.removeprefix("zoo ")
        parser.exit(
            2,
            f"error: zoo {command} takes no --out (received --out {values}): it writes into "
            f"the workspace; give that with --workspace {values}.\n",
        )


def _common(
    parser: argparse.ArgumentParser, *, out: tuple[str, str] | None = None, json: bool = False
) -> None:
    """``--workspace`` and ``--quiet`` for every command; ``--out`` where the command writes
    an output path of its own (``out`` = metavar, help), else a pointer to --workspace."""
    parser.add_argument("--workspace", metavar="DIR", help=WORKSPACE_HELP)
    if out is None:
        parser.add_argument("--out", action=_NoOutput, help=argparse.SUPPRESS)
    else:
        parser.add_argument("--out", metavar=out[0], help=out[1])
    if json:
        parser.add_argument(
            "--json", action="store_true", help="print the listing as JSON on stdout"
        )
    quiet = "print nothing but errors"
    if json:
        quiet += " (--json output still comes out)"
    elif parser.prog == "zoo predict":
        quiet += " (the CSV on standard output still comes out)"
    parser.add_argument("--quiet", action="store_true", help=quiet)


def _add(sub, name: str, text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)


_TTA_HELP = (
    "none, steppan, dihedral or rotations:N (default: the target's: none for a member, "
    "the ensemble's tta for an ensemble)"
)
_PRIORS_HELP = (
    'prior correction towards these class priors: JSON {"class": prior} or uniform '
    "(default: uniform)"
)


def _seed(text: str) -> int:
    """A seed: an integer in [0, 2**32 - 1], the range NumPy and TensorFlow accept."""
    value = _non_negative_int(text)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to 4294967295, got {text!r}")
    return value


def _recipes_options(sub) -> None:
    """``zoo recipes``'s options."""
    p = _add(sub, "recipes", "table of registered recipes")
    p.add_argument(
        "--params",
        action="store_true",
        help="count every network's parameters by building it (slow the first time, then "
        "cached); without it the counts come from a table of known backbones",
    )
    _common(p, json=True)


def _train_options(sub) -> None:
    """``zoo train``'s options."""
    p = _add(sub, "train", "train one member and save it in the workspace")
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
        type=_positive_int,
        help="total epochs, shared among the recipe's stages (default: the recipe's; 6 on "
        "demo data)",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, help="global batch size (default: the recipe's)"
    )
    p.add_argument(
        "--image-size",
        type=_positive_int,
        metavar="PX",
        help="input size in pixels (default: the recipe's; 64 on demo data, or the "
        "backbone's minimum)",
    )
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
    _train_runtime_options(p)
    _common(p)


def _train_runtime_options(p) -> None:
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


def _members_options(sub) -> None:
    """``zoo members``'s options."""
    p = _add(sub, "members", "table of saved members")
    _common(p, json=True)


def _evaluate_options(sub) -> None:
    """``zoo evaluate``'s options."""
    p = _add(
        sub, "evaluate", "score a member or ensemble; writes truth, predictions, metrics, plots"
    )
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument(
        "--data", metavar="SPEC", help="data set (default: the one the target was trained on)"
    )
    p.add_argument(
        "--images",
        metavar="DIR",
        help="image folder for isic:/csv: data (default: beside the CSV)",
    )
    p.add_argument(
        "--split",
        default=None,
        choices=["test", "val", "all"],
        help="which part (default: test on the training data, all on other data)",
    )
    p.add_argument("--tta", default=None, metavar="SCHEME", help=_TTA_HELP)
    p.add_argument(
        "--no-prior-correction",
        action="store_true",
        help="score raw softmax outputs (default: prior-corrected; an ensemble as its "
        "prior_correction says)",
    )
    p.add_argument("--target-priors", metavar="FILE|uniform", help=_PRIORS_HELP)
    p.add_argument(
        "--label-map",
        metavar="FILE",
        help='JSON {"source label": "model class"} (default: none; labels must be the '
        "target's classes)",
    )
    p.add_argument(
        "--ignore-unmapped",
        action="store_true",
        help="drop images whose label the map does not cover",
    )
    p.add_argument(
        "--task",
        metavar="NAME",
        help="binary task: melanocytic, epidermal or malignant (default: none, all classes)",
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (0 = none)"
    )
    cal = p.add_mutually_exclusive_group()
    cal.add_argument(
        "--calibrate",
        dest="calibrate",
        action="store_const",
        const=True,
        default=None,
        help="temperature scaling fitted on the target's validation split (default: on where "
        "it can be fitted and prior correction is on)",
    )
    cal.add_argument(
        "--no-calibration",
        dest="calibrate",
        action="store_const",
        const=False,
        help="score the probabilities without temperature scaling",
    )
    p.add_argument(
        "--operating-point",
        action="append",
        default=[],
        metavar="CLASS:METRIC=V",
        help="threshold chosen on validation, e.g. mel:sensitivity=0.90 or "
        "nv:specificity=0.95; repeatable (default: mel at sensitivity 0.90 and 0.95)",
    )
    p.add_argument(
        "--tsne",
        action="store_true",
        help="also write tsne.csv/tsne.png: t-SNE of the last hidden layer, coloured by class",
    )
    p.add_argument(
        "--ood-data",
        metavar="SPEC",
        help="images from elsewhere (any data spec) to separate from the evaluated ones: "
        "AUROC and FPR at 95 %% recall of the OOD scores (default: none)",
    )
    _common(
        p,
        out=(
            "DIR",
            "evaluation folder (default: <workspace>/evaluations/<target>-<data>-<split>…)",
        ),
    )


def _predict_options(sub) -> None:
    """``zoo predict``'s options."""
    p = _add(sub, "predict", "class probabilities for images or folders (ISIC CSV)")
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--tta", default=None, metavar="SCHEME", help=_TTA_HELP)
    p.add_argument(
        "--ood-scores",
        action="store_true",
        help="add columns ood_msp and ood_energy (out-of-distribution scores; lower: less "
        "like the training images) after the class columns",
    )
    p.add_argument(
        "--no-prior-correction",
        action="store_true",
        help="raw softmax outputs (default: prior-corrected; an ensemble as its prior_correction "
        "says)",
    )
    p.add_argument("--target-priors", metavar="FILE|uniform", help=_PRIORS_HELP)
    _common(
        p,
        out=(
            "FILE.csv",
            "output CSV, with its settings in FILE.csv.json (default: the CSV on standard output)",
        ),
    )


def _explain_options(sub) -> None:
    """``zoo explain``'s options."""
    p = _add(sub, "explain", "saliency or Grad-CAM maps of a member or ensemble for images")
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument(
        "--method",
        default="saliency",
        metavar="NAME",
        help="saliency (L1 norm over RGB of the loss gradient at the input) or gradcam",
    )
    p.add_argument(
        "--class",
        dest="class_name",
        metavar="NAME",
        help="class to explain (default: the predicted class of each image)",
    )
    _common(
        p,
        out=(
            "DIR",
            "folder for <image>.<method>.png overlays and .npy maps (required, no default)",
        ),
    )


def _data_options(sub) -> None:
    """``zoo data``'s options."""
    p = _add(sub, "data", "inspect data sets before training on them")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    c = _add(
        data,
        "check",
        "per-source and per-class counts, lesions, image sizes, unreadable files, duplicate "
        "images within and across sources, label-map coverage",
    )
    c.add_argument("specs", nargs="+", metavar="SPEC", help="data specs or a data TOML")
    c.add_argument(
        "--images", metavar="DIR", help="image folder for isic:/csv: data (default: beside the CSV)"
    )
    _common(c, json=True)


def _serve_options(sub) -> None:
    """``zoo serve``'s options."""
    p = _add(sub, "serve", "a local web page and JSON endpoint that predict uploaded images")
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; anything but loopback makes the page reachable from other "
        "machines, without authentication",
    )
    p.add_argument("--port", type=_port, default=8000, help="TCP port (0: any free port)")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=20.0,
        metavar="MB",
        help="largest upload accepted; larger ones get status 413",
    )
    _common(p)


def _export_options(sub) -> None:
    """``zoo export``'s options."""
    p = _add(
        sub, "export", "a member or ensemble as one artifact: uint8 images in, probabilities out"
    )
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument(
        "--format",
        default="keras",
        metavar="NAME",
        help="keras (model.keras, loads with Keras alone), saved_model (TensorFlow), litert "
        "(model.tflite) or onnx (model.onnx; needs the onnx extra)",
    )
    p.add_argument(
        "--quantize",
        default=None,
        metavar="MODE",
        help="litert only: float16 (weights), or int8 (networks in int8 calibrated on training "
        "images, their classifiers and what follows in float32) (default: float32)",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="SPEC",
        help="with --quantize int8: where the target's training data is now (default: the "
        "data spec it was trained with)",
    )
    _common(
        p,
        out=("DIR", "export folder (default: <workspace>/exports/<target>-<format>[-<quantize>])"),
    )


def _ensemble_options(sub) -> None:
    """``zoo ensemble``'s options."""
    p = _add(sub, "ensemble", "ensembles of saved members")
    ens = p.add_subparsers(dest="ensemble_command", required=True, metavar="ACTION")
    b = _add(ens, "build", "build an ensemble from a definition into the workspace")
    b.add_argument(
        "spec",
        metavar="NAME|FILE.toml",
        help="ensemble definition: a name (ensembles/, <workspace>/ensemble-specs/, "
        "$ZOO_ENSEMBLE_PATH) or a file",
    )
    b.add_argument(
        "--operating-point",
        metavar="CLASS:sensitivity=X|specificity=X",
        help="choose this class's threshold on the validation split and store it with the "
        "ensemble; zoo predict then flags images at or above it (default: none)",
    )
    _common(b)


def _leaderboard_options(sub) -> None:
    """``zoo leaderboard``'s options."""
    p = _add(sub, "leaderboard", "publish the comparison of all members and ensembles")
    p.add_argument(
        "--data",
        metavar="NAME",
        help="only entries evaluated on this data set (default: the data set and split with "
        "the most evaluations)",
    )
    _common(p, out=("DIR", "output folder (default: <workspace>/leaderboard)"), json=True)


def formats_doc() -> Path:
    """The file-format reference: inside an installed wheel, else the checkout's docs/."""
    import importlib.resources

    packaged = Path(str(importlib.resources.files("zoo"))) / "_builtin" / "docs" / "formats.md"
    return (
        packaged
        if packaged.is_file()
        else Path(__file__).resolve().parents[2] / "docs" / "formats.md"
    )


def build_parser() -> argparse.ArgumentParser:
    from zoo import __version__

    parser = argparse.ArgumentParser(
        prog="zoo",
        description="Keras model zoo for skin-lesion classification. File formats: "
        f"{formats_doc()}.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _recipes_options(sub)
    _train_options(sub)
    _members_options(sub)
    _evaluate_options(sub)
    _predict_options(sub)
    _explain_options(sub)
    _data_options(sub)
    _serve_options(sub)
    _export_options(sub)
    _ensemble_options(sub)
    _leaderboard_options(sub)
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
    """``--workspace``, else ``$ZOO_HOME``, else ``./zoo-runs``."""
    from zoo.store.workspace import resolve_workspace

    if args.workspace:
        given_as = f"--workspace {args.workspace}"
    elif os.environ.get("ZOO_HOME"):
        given_as = f"$ZOO_HOME={os.environ['ZOO_HOME']}"
    else:
        given_as = "./zoo-runs"
    return resolve_workspace(args.workspace, given_as=given_as)


def dispatch(args) -> int:
    from zoo.cli import commands

    handler = {
        "recipes": commands.recipes,
        "train": commands.train,
        "members": commands.members,
        "evaluate": commands.evaluate,
        "predict": commands.predict,
        "explain": commands.explain,
        "data": commands.data,
        "export": commands.export,
        "ensemble": commands.ensemble,
        "leaderboard": commands.leaderboard,
        "serve": commands.serve,
    }[args.command]
    return handler(args, workspace_of(args)) or 0


# Commands that import TensorFlow (``recipes`` only with ``--params``, which builds networks).
TENSORFLOW_COMMANDS = ("train", "evaluate", "predict", "explain", "serve", "export")


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``--quiet`` holds for this call only."""
    args = build_parser().parse_args(argv)
    from zoo import console

    if args.command in TENSORFLOW_COMMANDS or getattr(args, "params", False):
        console.import_tensorflow_quietly()

    was_quiet = console.is_quiet()
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
    finally:
        console.set_quiet(was_quiet)


if __name__ == "__main__":
    raise SystemExit(main())
