"""``zoo calibrate``: Fit and store a target's calibration and melanoma operating point."""

from __future__ import annotations

from pathlib import Path

from zoo.cli.options import add_command, add_common

NEEDS_TENSORFLOW = True


def add_options(sub) -> None:
    """``zoo calibrate``'s options."""
    p = add_command(
        sub,
        "calibrate",
        "fit a member's or ensemble's calibration and melanoma operating point on its "
        "validation split and store them with it (no retraining)",
    )
    p.add_argument("target", help="member or ensemble name, or its directory")
    add_common(p)


def run(args, workspace: Path) -> int:
    from zoo.evaluation.calibrate import calibrate_command

    return calibrate_command(args.target, workspace=workspace)
