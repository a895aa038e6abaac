"""Atomic writes and cached checksums."""

import hashlib
import json
import os

from recycler.files import CACHE_FILE, cache_dir, cached_sha256, write_text_atomic


def test_checksums_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("RECYCLER_CACHE", str(tmp_path / "cache"))
    file = tmp_path / "weights.bin"
    file.write_bytes(b"a" * 1000)
    assert cached_sha256([file]) == [hashlib.sha256(b"a" * 1000).hexdigest()]
    cache = cache_dir() / CACHE_FILE
    entries = json.loads(cache.read_text())
    entries[str(file.resolve())]["sha256"] = "from the cache"
    write_text_atomic(cache, json.dumps(entries))
    assert cached_sha256([file]) == ["from the cache"]  # same path, size and mtime: not read again
    file.write_bytes(b"b" * 1000)
    os.utime(file, ns=(0, file.stat().st_mtime_ns + 1_000_000))
    assert cached_sha256([file]) == [hashlib.sha256(b"b" * 1000).hexdigest()]  # rewritten: hashed anew


def test_an_unreadable_cache_only_costs_a_new_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("RECYCLER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / CACHE_FILE).write_text("{not json")
    file = tmp_path / "weights.bin"
    file.write_bytes(b"abc")
    assert cached_sha256([file]) == [hashlib.sha256(b"abc").hexdigest()]
    assert str(file.resolve()) in json.loads((tmp_path / "cache" / CACHE_FILE).read_text())
