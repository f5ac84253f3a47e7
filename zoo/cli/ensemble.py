"""``zoo ensemble``: Ensembles of saved members."""

from __future__ import annotations

from pathlib import Path

from zoo import console
from zoo.cli.options import (
    add_command,
    add_common,
)
from zoo.errors import ZooError
from zoo.store import Layout

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
    """Build the ensemble, then store its calibration (``zoo calibrate``) beside it."""
    from zoo.ensembles.build import build_command
    from zoo.ensembles.spec import find_spec
    from zoo.evaluation.calibrate import calibrate_command

    if args.ensemble_command != "build":
        raise ZooError(f"unknown ensemble action {args.ensemble_command!r}; use build")
    code = build_command(args.spec, workspace, operating_point=args.operating_point)
    folder = Layout(workspace).ensemble(find_spec(str(args.spec), workspace=workspace).name)
    try:
        calibrate_command(str(folder), workspace=workspace)
    except ZooError as exc:  # built all the same: it serves uncalibrated outputs
        console.warn(f"{folder.name} is built but not calibrated: {exc}")
    return code
