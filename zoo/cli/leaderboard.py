"""``zoo leaderboard``: Publish the comparison of all members and ensembles."""

from __future__ import annotations

from pathlib import Path

from zoo.cli.options import (
    add_command,
    add_common,
)

NEEDS_TENSORFLOW = False


def add_options(sub) -> None:
    """``zoo leaderboard``'s options."""
    p = add_command(sub, "leaderboard", "publish the comparison of all members and ensembles")
    p.add_argument(
        "--data",
        metavar="NAME",
        help="only entries evaluated on this data set (default: the data set and split with "
        "the most evaluations)",
    )
    add_common(p, out=("DIR", "output folder (default: <workspace>/leaderboard)"), json=True)


def run(args, workspace: Path) -> int:
    from zoo.publish.leaderboard import leaderboard_command

    return leaderboard_command(workspace, out=args.out, data_name=args.data, as_json=args.json)
