"""zoo.store.hashes: file digests remembered by stat data, never stale."""

from __future__ import annotations

import hashlib
import json

import pytest

from zoo.store import hashes as hashing


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    monkeypatch.setattr(hashing, "_MEMORY", {})


def test_digest_is_sha256_of_the_bytes(tmp_path):
    file = tmp_path / "model.keras"
    file.write_bytes(b"weights" * 1000)
    assert hashing.file_sha256(file) == hashlib.sha256(file.read_bytes()).hexdigest()


def test_settled_digest_is_reused_from_disk(tmp_path, monkeypatch):
    file = tmp_path / "model.keras"
    file.write_bytes(b"a" * 4096)
    monkeypatch.setattr(hashing, "RACY_NS", 0)  # treat the file as settled
    first = hashing.file_sha256(file)
    cache = json.loads((tmp_path / hashing.CACHE_NAME).read_text())
    assert cache["format_version"] == 1 and cache["entries"]["model.keras"]["sha256"] == first
    hashing._MEMORY.clear()  # a new process: only the file on disk remembers

    def no_hashing(path):
        raise AssertionError("hashed again although the file did not change")

    monkeypatch.setattr(hashing, "sha256_of", no_hashing)
    assert hashing.file_sha256(file) == first


def test_a_rewrite_of_the_same_size_is_hashed_again(tmp_path, monkeypatch):
    file = tmp_path / "model.keras"
    file.write_bytes(b"a" * 4096)
    monkeypatch.setattr(hashing, "RACY_NS", 0)
    before = hashing.file_sha256(file)
    file.write_bytes(b"b" * 4096)
    after = hashing.file_sha256(file)
    assert after != before and after == hashlib.sha256(b"b" * 4096).hexdigest()


def test_a_freshly_written_file_is_not_remembered(tmp_path):
    file = tmp_path / "model.keras"
    file.write_bytes(b"new")
    hashing.file_sha256(file)  # written just now: within the racy window
    assert not (tmp_path / hashing.CACHE_NAME).exists()
    assert str(file.resolve()) not in hashing._MEMORY


def test_unwritable_folder_still_hashes(tmp_path, monkeypatch):
    file = tmp_path / "model.keras"
    file.write_bytes(b"x")
    monkeypatch.setattr(hashing, "RACY_NS", 0)
    (tmp_path / hashing.CACHE_NAME).mkdir()  # a folder where the cache file would go
    assert hashing.file_sha256(file) == hashlib.sha256(b"x").hexdigest()


def _settled_cache(tmp_path, monkeypatch):
    file = tmp_path / "model.keras"
    file.write_bytes(b"a" * 4096)
    monkeypatch.setattr(hashing, "RACY_NS", 0)
    truth = hashing.file_sha256(file)
    hashing._MEMORY.clear()
    return file, truth, json.loads((tmp_path / hashing.CACHE_NAME).read_text())


def _entry(cache):
    return cache["entries"]["model.keras"]


# Each way the cache file can be damaged: the digest is computed again, never trusted.
CACHE_MUTATIONS = {
    "truncated": lambda c: None,
    "empty object": lambda c: c.clear(),
    "no format_version": lambda c: c.pop("format_version"),
    "other format_version": lambda c: c.update(format_version=2),
    "entries a list": lambda c: c.update(entries=[]),
    "digest a number": lambda c: _entry(c).update(sha256=5),
    "digest not hex": lambda c: _entry(c).update(sha256="z" * 64),
    "digest too short": lambda c: _entry(c).update(sha256="ab"),
    "stat too short": lambda c: _entry(c).update(stat=_entry(c)["stat"][:3]),
    "stat of strings": lambda c: _entry(c).update(stat=[str(v) for v in _entry(c)["stat"]]),
    "extra key": lambda c: _entry(c).update(note="x"),
}


@pytest.mark.parametrize("mutation", CACHE_MUTATIONS)
def test_a_damaged_cache_is_not_trusted(tmp_path, monkeypatch, mutation):
    file, truth, cache = _settled_cache(tmp_path, monkeypatch)
    signature = _entry(cache)["stat"]
    _entry(cache)["sha256"] = "0" * 64  # what the damaged cache would claim, were it trusted
    CACHE_MUTATIONS[mutation](cache)
    text = json.dumps(cache)[:20] if mutation == "truncated" else json.dumps(cache)
    (tmp_path / hashing.CACHE_NAME).write_text(text)
    assert signature == hashing._signature(file.stat())  # only the cache was changed
    assert hashing.file_sha256(file) == truth
