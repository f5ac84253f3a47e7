"""``zoo ensemble``: Ensembles of saved members."""

from __future__ import annotations

from pathlib import Path

from zoo.cli.options import (
    add_command,
    add_common,
)
from zoo.errors import ZooError

NEEDS_TENSORFLOW = False


def add_options(sub) -> None:
    """``zoo ensemble``'s options."""
    p = add_command(sub, "ensemble", "ensembles of saved members")
    ens = p.add_subparsers(dest="ensemble_command", required=True, metavar="ACTION")
    b = add_command(ens, "build", "build an ensemble from a definition into the workspace")
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
    add_common(b)


def run(args, workspace: Path) -> int:
    from zoo.ensembles.build import build_command

    if args.ensemble_command != "build":
        raise ZooError(f"unknown ensemble action {args.ensemble_command!r}; use build")
    return build_command(args.spec, workspace, operating_point=args.operating_point)
