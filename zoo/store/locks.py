"""One writer per output folder: a lock file holding the owner's pid and host.

``with hold(folder):`` creates ``.<folder name>.lock`` beside ``folder`` (atomically, with
``O_EXCL``) and removes it on exit. A second command that wants the same folder is refused
with one line naming the owner. A lock left by a process that no longer runs on this host is
stale: it is taken over, with a note.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from zoo import console
from zoo.errors import ZooError, describe_os_error
from zoo.store.records import LockRecord, try_load


def lock_file(folder: Path) -> Path:
    """The lock file that guards ``folder``."""
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _owner(file: Path) -> tuple[LockRecord | None, str | None]:
    """The lock's owner, or ``(None, why)`` when the file is unreadable or damaged (a lock
    being written right now is empty for a moment)."""
    return try_load(LockRecord, file)


def _is_stale(owner: LockRecord | None, file: Path) -> bool:
    """A damaged lock older than a minute, or one whose process is gone from this host."""
    if owner is None:
        try:
            return time.time() - file.stat().st_mtime > 60
        except FileNotFoundError:
            return True
    return owner.host == socket.gethostname() and not _alive(owner.pid)


def _create(file: Path, what: str) -> bool:
    """Create the lock file; False when it already exists."""
    record = LockRecord(
        pid=os.getpid(),
        host=socket.gethostname(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        what=what,
    )
    try:  # 0o666: the user's umask decides, as for every file zoo writes
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    except OSError as exc:
        raise ZooError(f"cannot write the lock file {file}: {describe_os_error(exc)}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record.to_dict(), handle)
    except OSError as exc:  # a full disk: no empty lock left to block the next command
        file.unlink(missing_ok=True)
        raise ZooError(f"cannot write the lock file {file}: {describe_os_error(exc)}") from None
    return True


def acquire(folder: Path, *, what: str) -> Path:
    """Take the lock of ``folder`` or raise a :class:`ZooError` naming its owner (or, for a
    damaged lock file, the file and the entry that is wrong)."""
    file = lock_file(folder)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"cannot create {file.parent}: {exc.strerror or exc}.") from None
    for _ in range(3):
        if _create(file, what):
            return file
        owner, _problem = _owner(file)
        if not _is_stale(owner, file):
            break
        console.warn(f"removing the stale lock {file} (its process is gone)")
        file.unlink(missing_ok=True)
    owner, problem = _owner(file)
    if owner is None:
        raise ZooError(f"{folder} is locked, and its lock {problem}")
    raise ZooError(
        f"{folder} is in use by another zoo command ({owner.what or '?'}, pid "
        f"{owner.pid} on {owner.host} since {owner.started or '?'}); "
        f"wait for it to finish, or delete {file} if that process is gone."
    )


def release(file: Path) -> None:
    """Remove a lock this process holds (not one another process has taken over)."""
    owner, _ = _owner(file)
    if owner is not None and owner.pid == os.getpid():
        file.unlink(missing_ok=True)


@contextlib.contextmanager
def hold(folder: Path, *, what: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` for the duration of the ``with`` block."""
    file = acquire(folder, what=what)
    try:
        yield file
    finally:
        release(file)
