"""``python -m zoo`` / ``zoo``: parse, dispatch, turn bad input into one line and exit status 2.

Thin by design: every subcommand lives in its own module; this file only knows their
options. ``--workspace`` is the workspace in every command, ``--out`` the output path of the
commands that write one (evaluate, predict, leaderboard). Exit status: 0 success, 2 bad input
(one-line message), 1 internal failure.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys
from pathlib import Path

from zoo.cli import (
    calibrate,
    data,
    ensemble,
    evaluate,
    explain,
    export,
    leaderboard,
    members,
    options,
    predict,
    recipes,
    serve,
    train,
)
from zoo.errors import ZooError, describe_os_error

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
        formatter_class=options.HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_options(sub)
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


# Each command's module declares its options (add_options), runs it (run) and says whether
# it needs TensorFlow; the order here is the order of zoo --help.
COMMANDS = {
    "recipes": recipes,
    "train": train,
    "members": members,
    "evaluate": evaluate,
    "calibrate": calibrate,
    "predict": predict,
    "explain": explain,
    "data": data,
    "serve": serve,
    "export": export,
    "ensemble": ensemble,
    "leaderboard": leaderboard,
}


# What Ctrl-C leaves behind, by command (None: every other command)
INTERRUPTED = {
    "train": "The run continues from its last epoch with the same command and --resume.",
    None: "Nothing half-written was kept; run the command again.",
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``--quiet`` holds for this call only."""
    args = build_parser().parse_args(argv)
    from zoo import console

    command = COMMANDS[args.command]
    if command.NEEDS_TENSORFLOW or getattr(args, "params", False):
        console.import_backend_quietly()

    was_quiet, stderr = console.is_quiet(), sys.stderr
    console.set_quiet(args.quiet)
    try:
        check_arguments(args)
        return command.run(args, workspace_of(args)) or 0
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the system's refusal (a full disk, a permission) in one line
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        # the failed writer's objects, freed with this exception, may report it once more
        # (h5py retries its flush when freed and prints a traceback): that would only repeat
        # this line, so it goes nowhere
        sys.stderr = io.StringIO()
        return 2
    except KeyboardInterrupt:
        print(f"interrupted. {INTERRUPTED.get(args.command, INTERRUPTED[None])}", file=sys.stderr)
        return 130
    finally:
        console.set_quiet(was_quiet)
        if sys.stderr is not stderr:
            gc.collect()  # those objects, freed now while their reports go nowhere
            sys.stderr = stderr


if __name__ == "__main__":
    raise SystemExit(main())
