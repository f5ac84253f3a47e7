"""Rich consoles for the whole package: results on stdout, warnings and progress on stderr.

``--quiet`` silences both (errors are printed by ``zoo.cli.main`` itself); the Python API is quiet
unless asked (:func:`quiet_unless`). When a stream is not a
terminal (a pipe, a log file) its console is very wide, so that tables never truncate names,
and progress bars are off, so that a log holds whole lines only (one per training epoch).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys

from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

NOT_A_TERMINAL_WIDTH = 10_000


class _Console(Console):
    """A rich Console that does not wrap or truncate when its stream is not a terminal."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal:
            return size
        return ConsoleDimensions(NOT_A_TERMINAL_WIDTH, size.height)


console = _Console(highlight=False)
err_console = _Console(stderr=True, highlight=False)
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence everything but errors: tables, notes, warnings and progress bars."""
    global _quiet
    _quiet = quiet
    console.quiet = err_console.quiet = quiet


def is_quiet() -> bool:
    return _quiet


@contextlib.contextmanager
def quiet_unless(show: bool):
    """Quiet within, unless ``show``; the previous setting comes back after. The Python API
    (:mod:`zoo.api`) runs this way: silent by default, progress and notes with ``progress=True``."""
    was = _quiet
    set_quiet(not show)
    try:
        yield
    finally:
        set_quiet(was)


@contextlib.contextmanager
def stdout_reserved(reserved: bool = True):
    """Within, nothing but the caller writes to stdout (``zoo predict`` without ``--out``
    keeps it for the CSV); warnings and progress on stderr go on."""
    was = console.quiet
    console.quiet = was or reserved
    try:
        yield
    finally:
        console.quiet = was


def info(message: str, *, markup: bool = False) -> None:
    r"""Print an informational line on stdout unless --quiet. ``message`` is plain text (a file
    name with brackets in it is printed as it is), unless ``markup``: then it is rich markup,
    and the values put into it are :func:`escape`\ d by the caller."""
    if not _quiet:
        console.print(message, markup=markup)


def warn(message: str) -> None:
    """Print a warning on stderr unless --quiet; ``message`` is plain text, as for :func:`info`."""
    err_console.print("[yellow]warning:[/yellow]", escape(message))


def print_json(data) -> None:
    """``--json`` output: one JSON document on stdout, printed even with --quiet; a number
    that is not finite (NaN, ±inf) becomes ``null``, as JSON has no such numbers."""
    sys.stdout.write(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def progress(**extra_columns) -> contextlib.AbstractContextManager[Progress]:
    """A rich Progress on stderr with the usual columns; off when quiet or neither a terminal
    nor a Jupyter notebook (where rich draws it as a widget)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=err_console,
        disable=_quiet or not (err_console.is_terminal or err_console.is_jupyter),
        transient=False,
    )


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 pointed at /dev/null within (nothing to silence if there is none)."""
    sys.stderr.flush()
    try:
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no file descriptor 2 to silence
        yield
        return
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_backend_quietly() -> None:
    """Import Keras and its backend (``KERAS_BACKEND``, else ``~/.keras/keras.json``) with file
    descriptor 2 silenced: TensorFlow's C++ start-up lines (oneDNN, absl) ignore
    TF_CPP_MIN_LOG_LEVEL. TensorFlow is imported only when it is the backend. A failed import
    still raises as usual."""
    if "keras" in sys.modules:
        return
    with _stderr_silenced():
        import keras  # noqa: F401


def keras_backend() -> str:
    """The name of the backend Keras runs on: ``tensorflow``, ``jax``, ``torch``, ``numpy``."""
    import_backend_quietly()
    import keras

    return keras.backend.backend()


def require_tensorflow(what: str) -> None:
    """A one-line :class:`~zoo.errors.ZooError` when Keras does not run on TensorFlow: for
    what only TensorFlow does (training for now, ``zoo export``, tf.distribute)."""
    from zoo.errors import ZooError

    backend = keras_backend()
    if backend != "tensorflow":
        raise ZooError(
            f"{what} needs Keras' TensorFlow backend; this process runs on {backend} "
            "(KERAS_BACKEND). Run it with KERAS_BACKEND=tensorflow."
        )
