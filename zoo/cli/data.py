"""``zoo data``: Inspect data sets before training on them."""

from __future__ import annotations

from pathlib import Path

from zoo.cli.options import (
    add_command,
    add_common,
)

NEEDS_TENSORFLOW = False


def add_options(sub) -> None:
    """``zoo data``'s options."""
    p = add_command(sub, "data", "inspect data sets before training on them")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    c = add_command(
        data,
        "check",
        "per-source and per-class counts, lesions, image sizes, unreadable files, duplicate "
        "images within and across sources, label-map coverage",
    )
    c.add_argument("specs", nargs="+", metavar="SPEC", help="data specs or a data TOML")
    c.add_argument(
        "--images", metavar="DIR", help="image folder for isic:/csv: data (default: beside the CSV)"
    )
    add_common(c, json=True)


def run(args, workspace: Path) -> int:
    from zoo.data.check import check_command

    return check_command(args, workspace)
