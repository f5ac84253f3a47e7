"""What every command's options share: the help format, ``--workspace``/``--out``/``--quiet``,
and the value types (positive integers, ports, seeds, batch and image sizes within zoo's
limits)."""

from __future__ import annotations

import argparse

from zoo.data.images import MAX_BATCH_SIZE, MAX_IMAGE_SIZE, check_bound
from zoo.errors import ZooError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
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


def _bounded(name: str, option: str, text: str) -> int:
    """A positive integer within zoo's limit for ``name``; the library's own message otherwise."""
    value = positive_int(text)
    try:
        return check_bound(name, value, option=option)
    except ZooError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def batch_size(text: str) -> int:
    """``--batch-size``: 1 to :data:`zoo.data.images.MAX_BATCH_SIZE` images."""
    return _bounded("batch_size", "--batch-size", text)


def image_size(text: str) -> int:
    """``--image-size``: 1 to :data:`zoo.data.images.MAX_IMAGE_SIZE` pixels."""
    return _bounded("image_size", "--image-size", text)


BATCH_SIZE_HELP = f"global batch size, at most {MAX_BATCH_SIZE} (default: the recipe's)"
IMAGE_SIZE_HELP = (
    f"input size in pixels, at most {MAX_IMAGE_SIZE} (default: the recipe's; 64 on demo data, "
    "or the backbone's minimum)"
)


def port(text: str) -> int:
    value = non_negative_int(text)
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


class NoOutput(argparse.Action):
    """``--out`` on a command that writes into the workspace: one line saying what to use."""

    def __call__(self, parser, namespace, values, option_string=None):
        command = parser.prog.removeprefix("zoo ")
        parser.exit(
            2,
            f"error: zoo {command} takes no --out (received --out {values}): it writes into "
            f"the workspace; give that with --workspace {values}.\n",
        )


def add_common(
    parser: argparse.ArgumentParser, *, out: tuple[str, str] | None = None, json: bool = False
) -> None:
    """``--workspace`` and ``--quiet`` for every command; ``--out`` where the command writes
    an output path of its own (``out`` = metavar, help), else a pointer to --workspace."""
    parser.add_argument("--workspace", metavar="DIR", help=WORKSPACE_HELP)
    if out is None:
        parser.add_argument("--out", action=NoOutput, help=argparse.SUPPRESS)
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


def add_command(sub, name: str, text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)


TTA_HELP = (
    "none, steppan, dihedral or rotations:N (default: the target's: none for a member, "
    "the ensemble's tta for an ensemble)"
)


PRIORS_HELP = (
    'prior correction towards these class priors: JSON {"class": prior} or uniform '
    "(default: uniform)"
)


def seed(text: str) -> int:
    """A seed: an integer in [0, 2**32 - 1], the range NumPy and TensorFlow accept."""
    value = non_negative_int(text)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to 4294967295, got {text!r}")
    return value
