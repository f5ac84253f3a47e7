"""Where zoo keeps its work, and writing files so that nothing is ever half-written.

The workspace is ``--workspace``, else ``$ZOO_HOME``, else ``./zoo-runs``. It holds
``members/``, ``ensembles/``, ``evaluations/``, ``runs/`` (training in progress),
``cache/`` (decoded images, label lists, parameter counts) and ``data/`` (the generated
demo set); ``docs/formats.md`` describes every file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from zoo.errors import ZooError


def resolve_workspace(out: str | os.PathLike | None = None, *, given_as: str = "") -> Path:
    """The workspace folder (created if missing); a one-line :class:`ZooError` naming how it
    was given (``given_as``, e.g. ``--workspace DIR``) when it cannot be one."""
    path = Path(out or os.environ.get("ZOO_HOME") or "zoo-runs").expanduser().resolve()
    reason = "it is a file" if path.exists() and not path.is_dir() else None
    if reason is None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
    if reason is not None:
        raise ZooError(
            f"{given_as or f'workspace {path}'} cannot be the workspace folder ({reason}); give "
            "a folder that can be created and written with --workspace DIR."
        )
    return path


def _temporary_name(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}")


def _temporary_beside(path: Path, suffix: str = "") -> Path:
    """A new empty file beside ``path``, created with mode 0666 so that the user's umask
    decides its permissions, as for any file (``mkstemp`` would make it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        name = _temporary_name(path, suffix)
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return name
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    tmp = _temporary_beside(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def atomic_write_csv(path: Path, frame: pd.DataFrame, **kwargs) -> Path:
    return atomic_write_text(path, frame.to_csv(**kwargs))


FREE_SPACE_MARGIN = 1 << 20  # bytes kept free beyond a writer's estimate


def ensure_free_space(folder: Path, needed: int) -> None:
    """An ``OSError`` (ENOSPC, naming ``folder``) when its file system has fewer than
    ``needed`` bytes free (and a small margin): writers that cannot fail cleanly on a full disk
    (HDF5 weights, whose half-closed file crashes the interpreter when it is freed) are not
    started on one."""
    if needed <= 0:
        return
    free = shutil.disk_usage(folder).free
    if free < needed + FREE_SPACE_MARGIN:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device ({free} bytes free, about {needed} needed)",
            str(folder),
        )


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "", *, needs_bytes: int = 0) -> Iterator[Path]:
    """A temporary file name beside ``path`` for writers that need a name (numpy, keras,
    matplotlib); ``needs_bytes``: what the writer will need, checked free before it starts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ensure_free_space(path.parent, needs_bytes)
    tmp = _temporary_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Build a directory under a temporary name; it appears at ``final`` only when complete."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:  # mode 0777: the umask decides (mkdtemp would make it 0700)
        tmp = _temporary_name(final)
        try:
            os.mkdir(tmp, 0o777)
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
