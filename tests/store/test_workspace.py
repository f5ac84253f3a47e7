"""zoo.store.workspace: atomic directories appear whole, with the usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from zoo.store.workspace import atomic_directory


def test_atomic_directory_appears_whole_with_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    final = tmp_path / "member"
    with atomic_directory(final) as tmp:
        (tmp / "model.keras").write_bytes(b"x")
        assert not final.exists()
    assert (final / "model.keras").read_bytes() == b"x"
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700


def test_failed_atomic_directory_keeps_the_old_one(tmp_path):
    final = tmp_path / "evaluation"
    final.mkdir()
    (final / "metrics.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(final) as tmp:
        (tmp / "metrics.json").write_text("new")
        raise RuntimeError("crash mid-write")
    assert (final / "metrics.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation"]  # no temporaries left
