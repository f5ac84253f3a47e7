"""One rich console for the whole package, and progress bars that respect --quiet."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=False, highlight=False)
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence progress bars and informational lines (errors still print)."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def info(message: str) -> None:
    """Print an informational line unless --quiet."""
    if not _quiet:
        console.print(message)


def warn(message: str) -> None:
    """Print a warning; shown even with --quiet."""
    console.print(f"[yellow]warning:[/yellow] {message}")


def progress(**extra_columns) -> contextlib.AbstractContextManager[Progress]:
    """A rich Progress with the usual columns; disabled when quiet."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=_quiet,
        transient=False,
    )
