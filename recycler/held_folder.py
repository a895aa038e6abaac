"""A folder opened once, without following links, and written only through its descriptor.

A path checked against the allowed roots can be redirected before it is written: whoever may write
inside a root can swap a folder on the way for a symlink to anywhere. Opening each component with
O_NOFOLLOW refuses such a link, and every later mkdir, open and rename is relative to the held
descriptor, so a swap after the open no longer moves where the writes land.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from contextlib import suppress
from pathlib import Path
from typing import IO

from recycler.errors import RecyclerError

_FOLDER = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class HeldFolder:
    """An open folder; `path` names it for code that wants a path (a /proc/self/fd link to the
    held folder itself, not to whatever its name points at later)."""

    def __init__(self, fd: int, shown: Path) -> None:
        self.fd = fd
        self.shown = shown  # the path it was opened by, for messages

    @classmethod
    def open(cls, folder: Path, *, create: bool = False) -> HeldFolder:
        """Open an absolute folder from `/` one component at a time, creating missing ones if
        `create`; a symbolic link anywhere on the way is refused."""
        fd = os.open("/", os.O_PATH | _FOLDER)
        walked = Path("/")
        try:
            for name in folder.parts[1:]:
                walked = walked / name
                if create:
                    with suppress(FileExistsError):
                        os.mkdir(name, dir_fd=fd)
                parent, fd = fd, _open_step(name, parent_fd=fd, walked=walked)
                os.close(parent)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, folder)

    def __enter__(self) -> HeldFolder:
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)

    @property
    def path(self) -> Path:
        return Path(f"/proc/self/fd/{self.fd}")

    def real_path(self) -> Path:
        """Where the held folder is now, as the kernel sees it."""
        return Path(os.readlink(self.path))

    def make_hidden(self, prefix: str) -> str:
        """Create a new private subfolder with a random name starting with `prefix`; its name."""
        while True:
            name = f"{prefix}{secrets.token_hex(6)}"
            try:
                os.mkdir(name, 0o700, dir_fd=self.fd)
                return name
            except FileExistsError:
                continue

    def child(self, name: str) -> HeldFolder:
        """Open a subfolder that must not be a link."""
        return HeldFolder(_open_step(name, parent_fd=self.fd, walked=self.shown / name, flags=os.O_RDONLY), self.shown / name)

    def create(self, name: str) -> IO[bytes]:
        """A new file in the folder, open for writing, in place of any entry of that name (a link
        is removed, never written through)."""
        with suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.fdopen(os.open(name, flags, 0o644, dir_fd=self.fd), "wb")

    def entry(self, name: str) -> os.stat_result | None:
        """The entry itself (a link is not followed), or None if there is none."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def rename(self, name: str, new_name: str, into: HeldFolder | None = None) -> None:
        os.rename(name, new_name, src_dir_fd=self.fd, dst_dir_fd=(into or self).fd)

    def remove_tree(self, name: str) -> None:
        """Remove a subfolder and all in it; links inside are removed, never followed."""
        shutil.rmtree(name, dir_fd=self.fd, ignore_errors=True)


def _open_step(name: str, *, parent_fd: int, walked: Path, flags: int = os.O_PATH) -> int:
    """O_PATH by default: walking through a folder needs only search permission, as a path lookup does."""
    try:
        return os.open(name, _FOLDER | flags, dir_fd=parent_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(name, parent_fd):  # O_DIRECTORY gives ENOTDIR
            raise RecyclerError(f"{walked} is a symbolic link; the export folder must not go through links") from None
        raise RecyclerError(f"{walked}: {error.strerror.lower()}") from None


def _is_link(name: str, parent_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False
