"""Opening, writing and checksumming files: regular files opened with their checks made on the
descriptor, atomic writes, and sha256 sums cached by path, size and modification time, so a
multi-GB pool is hashed once, not on every command."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from recycler.errors import RecyclerError

CACHE_FILE = "sha256.json"


def open_regular(path: Path, where: str, inside: Callable[[Path], bool] | None = None) -> int:
    """A read-only descriptor of the regular file at `path`, checked on the descriptor itself: a FIFO
    or device is refused without blocking. With `inside` (whether a real path lies inside the allowed
    roots), the file is opened at its real path without following a further link, and the path the
    kernel reports for the open descriptor must be inside too, so a link swapped in after an earlier
    check leads nowhere."""
    try:
        at = path.resolve() if inside else path
    except (OSError, RuntimeError) as error:  # a symlink loop
        raise RecyclerError(f"{where}: {path} cannot be resolved ({error})") from None
    if inside is not None and not inside(at):
        raise RecyclerError(f"{where}: {path} resolves to {at}, outside the allowed roots")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if inside else 0)
    try:
        descriptor = os.open(at, flags)
    except OSError as error:
        raise RecyclerError(f"{where}: {path} cannot be opened ({error.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise RecyclerError(f"{where}: {path} is not a regular file")
        if inside is not None and not inside(Path(os.readlink(f"/proc/self/fd/{descriptor}"))):
            raise RecyclerError(f"{where}: {path} was not inside the allowed roots when opened")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary sibling and a rename: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    """recycler's cache folder: RECYCLER_CACHE, else $XDG_CACHE_HOME/recycler, else ~/.cache/recycler."""
    if "RECYCLER_CACHE" in os.environ:
        return Path(os.environ["RECYCLER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recycler"


def cached_sha256(files: list[Path]) -> list[str]:
    """sha256 of each file, reusing a sum computed before for the same path, size and mtime.

    A file rewritten in place keeps its path but not its mtime, so its sum is computed anew. The
    cache is one JSON file replaced atomically; a cache that cannot be read or written only costs
    the time to hash again.
    """
    cache_file = cache_dir() / CACHE_FILE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    sums, changed = [], False
    for file in files:
        stat = file.stat()
        key = str(file.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns]
        entry = cache.get(key)
        if not (isinstance(entry, dict) and entry.get("stamp") == stamp):
            entry, changed = {"stamp": stamp, "sha256": sha256_file(file)}, True
            cache[key] = entry
        sums.append(entry["sha256"])
    if changed:
        try:
            write_text_atomic(cache_file, json.dumps(cache))
        except OSError:
            pass
    return sums
