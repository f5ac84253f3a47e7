"""Where zoo may write: inside its workspace, or at the ``--out`` the user gave, and never over
something it did not write. The one rule for output folders and output files.

An output folder (``zoo evaluate``, ``zoo explain``, ``zoo export``, ``zoo leaderboard``) is
zoo's when it holds the marker record ``.zoo-output.json`` (:class:`OutputMarker`: its
``kind``, what wrote it and the entries it wrote), not because of the names of the files in
it. :func:`claim_output_folder` accepts an absent or empty folder, a folder whose marker is
of the same kind and that holds nothing the marker does not list, and — so that existing
workspaces keep working — a folder inside the workspace written before the marker existed
that holds only the files zoo writes there. Anything else is refused in one line: the folder
is replaced whole, so a user's file in it would be lost. :func:`output_folder` claims the
folder, builds the new one under a temporary name, marks it and swaps it in.

An output file (``zoo predict --out FILE.csv``, with its sidecar ``FILE.csv.json``) is
claimed by :func:`claim_output_file`: it must be a regular file or absent, outside zoo's own
folders of the workspace, and an existing one is replaced only when its sidecar records it
(:class:`zoo.store.records.PredictionsRecord`, same name and sha256).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from zoo.errors import ZooError
from zoo.store.files import first_line
from zoo.store.records import OutputMarker, PredictionsRecord, try_load

MARKER_FILE = ".zoo-output.json"
KINDS = OutputMarker.KINDS
NOUNS = {
    "evaluation": "an evaluation",
    "explain": "an explanation",
    "export": "an export",
    "leaderboard": "a leaderboard",
}
# the workspace's folders that hold zoo's own files: never a user's --out FILE
MANAGED_FOLDERS = ("members", "ensembles", "evaluations", "runs", "cache", "exports", "leaderboard")


def _shown(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", …" if len(names) > 3 else "")


def inside(path: Path, folder: Path | None) -> bool:
    """True when ``path`` is ``folder`` or lies under it (both resolved)."""
    if folder is None:
        return False
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def read_marker(folder: Path) -> tuple[OutputMarker | None, str | None]:
    """The folder's marker, ``(None, None)`` without one, ``(None, why)`` when damaged."""
    file = Path(folder) / MARKER_FILE
    if not file.exists() and not file.is_symlink():
        return None, None
    return try_load(OutputMarker, file)


def claim_output_folder(
    path: str | os.PathLike,
    kind: str,
    *,
    workspace: Path | None = None,
    legacy: Collection[str] = (),
    given_as: str = "--out",
) -> Path:
    """``path`` resolved, when zoo may replace it with a new ``kind`` folder; else a one-line
    :class:`ZooError` naming the folder, what is in it and what to do.

    ``legacy``: the file names a ``kind`` folder held before the marker existed; such a
    folder is accepted inside ``workspace`` only."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    folder = Path(path).expanduser().resolve()
    label = f"{given_as} {folder}" if given_as else str(folder)
    noun = NOUNS[kind]
    if folder.exists() and not folder.is_dir():
        raise ZooError(f"{label} is a file; give a folder for {noun} (new or empty).")
    if not folder.exists():
        return folder
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError as exc:
        raise ZooError(
            f"{label} cannot be read ({first_line(exc)}); give another folder."
        ) from None
    if not names:
        return folder
    marker, problem = read_marker(folder)
    if problem is not None:
        raise ZooError(f"{label}: its marker {problem}")
    if marker is not None:
        if marker.kind != kind:
            raise ZooError(
                f"{label} holds {NOUNS[marker.kind]} ({marker.written_by}), not {noun}; give "
                f"a new or empty folder for {noun}."
            )
        foreign = [n for n in names if n != MARKER_FILE and n not in marker.files]
        if not foreign:
            return folder
        why = f"its {MARKER_FILE} does not list them"
    elif legacy and inside(folder, workspace) and set(names) <= set(legacy):
        return folder  # written by zoo before the marker existed, in zoo's own workspace
    else:
        foreign, why = names, f"there is no {MARKER_FILE}"
    raise ZooError(
        f"{label} holds files that are not {noun} ({_shown(foreign)}): zoo did not write them "
        f"({why}); zoo replaces the whole folder, so move them out or give a new or empty folder."
    )


def mark_output_folder(folder: Path, kind: str, *, written_by: str) -> Path:
    """Write ``.zoo-output.json`` listing ``folder``'s entries (call it last)."""
    import zoo

    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir() if p.name != MARKER_FILE)
    return OutputMarker(
        kind=kind,
        written_by=written_by,
        files=files,
        zoo_version=zoo.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    ).write(folder / MARKER_FILE)


@contextlib.contextmanager
def output_folder(
    path: str | os.PathLike,
    kind: str,
    *,
    written_by: str,
    workspace: Path | None = None,
    legacy: Collection[str] = (),
    given_as: str = "--out",
) -> Iterator[Path]:
    """Claim ``path`` (:func:`claim_output_folder`), yield a temporary folder beside it to
    fill, then mark it and swap it in whole; a failure leaves the previous folder as it was."""
    from zoo.store.workspace import atomic_directory

    final = claim_output_folder(path, kind, workspace=workspace, legacy=legacy, given_as=given_as)
    with atomic_directory(final) as tmp:
        yield tmp
        mark_output_folder(tmp, kind, written_by=written_by)


def claim_output_file(
    path: str | os.PathLike,
    *,
    sidecar: Path,
    workspace: Path | None = None,
    given_as: str = "--out",
) -> Path:
    """``path`` when zoo may write it (and its ``sidecar``); else a one-line ZooError.

    Refused: a path in the workspace's own folders (``members/``, ``evaluations/``, …), a
    device, pipe or other file that is not a regular file, and an existing file that zoo
    did not write (its sidecar does not record it by name and sha256)."""
    path = Path(path).expanduser()
    label = f"{given_as} {path}"
    if workspace is not None:
        root = Path(workspace).resolve()
        for name in MANAGED_FOLDERS:
            if inside(path, root / name) or inside(sidecar, root / name):
                raise ZooError(
                    f"{label} is inside the workspace's {name}/ folder, which holds zoo's own "
                    "files; give a path outside it."
                )
    for file in (path, sidecar):
        try:
            mode = os.stat(file).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ZooError(f"{label}: cannot check {file} ({first_line(exc)}).") from None
        if stat.S_ISDIR(mode):
            raise ZooError(
                f"{label}: {file} is a folder; pass a file name such as predictions.csv."
            )
        if not stat.S_ISREG(mode):
            raise ZooError(
                f"{label}: {file} is not a regular file (a device, pipe or socket); pass a file "
                "name such as predictions.csv."
            )
    if not path.exists() and not sidecar.exists():
        return path
    record, problem = try_load(PredictionsRecord, sidecar) if sidecar.exists() else (None, None)
    named = record is not None and record.predictions == path.name
    if named and (not path.exists() or _sha256(path) == record.sha256):
        return path
    if named:
        why = f"it changed since zoo wrote it: its sha256 is not the one in {sidecar.name}"
    elif record is not None:
        why = f"{sidecar.name} records another file, {record.predictions}"
    elif problem is not None:
        why = f"{sidecar.name} beside it is not a record zoo wrote"
    else:
        why = f"there is no {sidecar.name} beside it"
    existing = path if path.exists() else sidecar
    raise ZooError(
        f"{label}: {existing} exists and zoo did not write it ({why}); give a new file name, "
        "or delete it first if it may go."
    )


def _sha256(path: Path) -> str:
    """sha256 of the file's bytes (nothing is cached beside a user's file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
