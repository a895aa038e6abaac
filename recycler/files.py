"""Opening, writing and checksumming files: regular files opened with their checks made on the
descriptor, atomic writes, a file's sha256, and recycler's cache folder."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from recycler.errors import RecyclerError

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
