"""``zoo serve``: A local web page and JSON endpoint that predict uploaded images."""

from __future__ import annotations

from pathlib import Path

from zoo.cli.options import (
    add_command,
    add_common,
    port,
)

NEEDS_TENSORFLOW = True


def add_options(sub) -> None:
    """``zoo serve``'s options."""
    p = add_command(sub, "serve", "a local web page and JSON endpoint that predict uploaded images")
    p.add_argument("target", help="member or ensemble name, or its directory")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; anything but loopback makes the page reachable from other "
        "machines, without authentication",
    )
    p.add_argument("--port", type=port, default=8000, help="TCP port (0: any free port)")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=20.0,
        metavar="MB",
        help="largest upload accepted; larger ones get status 413",
    )
    p.add_argument(
        "--no-calibration",
        action="store_true",
        help="serve uncalibrated probabilities (default: the target's stored calibration)",
    )
    add_common(p)


def run(args, workspace: Path) -> int:
    from zoo.deploy.serve.command import serve_command

    return serve_command(
        args.target,
        workspace=workspace,
        host=args.host,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
        calibrated=not args.no_calibration,
    )
