"""Helpers of the fault-injection suite: run the CLI, check the one-line refusal, and check
that nothing already written was lost or half-written."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEMBER = "small_cnn.demo.s0"


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(argv, capsys) -> Result:
    """``zoo ARGV`` in this process; argparse's exit becomes a status like any other."""
    from zoo.cli.main import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return Result(code, out, err)


def zoo_process(*argv, env: dict | None = None, **popen) -> subprocess.Popen:
    """``python -m zoo ARGV`` as a real process (for signals and concurrency)."""
    environment = {**os.environ, "MPLBACKEND": "Agg", "COLUMNS": "250", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "zoo", *map(str, argv)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def assert_refused(result: Result, *named, pattern: str | None = None) -> None:
    """Exit status 2, one ``error:`` line (a data set may list its problems under it), no
    traceback, naming every string in ``named`` and matching ``pattern``."""
    text = result.out + result.err
    assert "Traceback" not in text, text
    assert result.code == 2, (result.code, text)
    errors = [line for line in result.err.splitlines() if "error:" in line]
    assert len(errors) == 1, result.err
    for name in named:
        assert str(name) in result.err, (name, result.err)
    if pattern is not None:
        assert re.search(pattern, result.err), (pattern, result.err)


def snapshot(folder: Path) -> dict[str, str]:
    """relative path → sha256 of every file under ``folder`` (lock files and caches left out:
    the pixel cache and the remembered file digests may be written by any read)."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and not p.name.endswith(".lock")
        and p.name != ".sha256-cache.json"
        and "cache" not in p.parts
    }


def half_written(folder: Path) -> list[str]:
    """Temporary files, folders or lock files left under ``folder``."""
    return [
        str(p)
        for p in Path(folder).rglob("*")
        if p.name.endswith((".tmp", ".lock", ".old")) or ".tmp." in p.name
    ]


def png_bomb(path: Path, side: int = 40_000) -> Path:
    """A valid PNG header claiming ``side`` × ``side`` pixels with a tiny body: PIL refuses to
    decode it as a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def tiny_folder(folder: Path, *, classes: int = 3, per_class: int = 20) -> str:
    """A ``folder:`` data set of 16 px images, small enough to train on in a second or two."""
    from conftest import write_image

    for c in range(classes):
        for i in range(per_class):
            write_image(Path(folder) / f"class{c}" / f"img{c}_{i}.jpg", seed=100 * c + i)
    return f"folder:{folder}"
