"""What keeps the service safe to leave running: the default bearer token, allowed roots for every
path a request names (and the roots trusted to hold task code), and a bound on request bodies."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recycler.errors import RecyclerError, one_line

TOKEN_ENV = "RECYCLER_TOKEN"
MAX_BODY_BYTES = 1 << 20


class PathNotAllowed(Exception):
    """A path a request names resolves outside every allowed root (answered with 403)."""


def load_token(path: Path) -> tuple[str, bool]:
    """The token from RECYCLER_TOKEN, else the token file; a new one is generated and stored 0600
    on first start. Returns (token, created) so the caller shows a new token once."""
    if os.environ.get(TOKEN_ENV):  # taken out, so no process the service starts (Ray, drivers, workers) inherits it
        return os.environ.pop(TOKEN_ENV), False
    if path.is_file():
        token = path.read_text().strip()
        if token:
            path.chmod(0o600)
            return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    path.chmod(0o600)
    return token, True


class AllowedRoots:
    """Folders under which requests may name checkpoints, suites and export targets, those of them
    whose lm-eval task folders may load Python (`code`), and folders never allowed even inside a
    root (`private`: the service's own data, its token, other users' suite copies).

    A path is checked after Path.resolve(), which collapses `..` and follows symlinks, so neither
    escapes a root; `..` in a path a request writes is refused outright.
    """

    def __init__(self, roots: Iterable[Path], code: Iterable[Path] = (), private: Iterable[Path] = (),
                 own: Iterable[Path] = ()) -> None:
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        if not self.roots:
            raise ValueError("at least one allowed root is needed")
        self.private = [Path(r).expanduser().resolve() for r in private]
        self.own = [Path(r).expanduser().resolve() for r in own]  # the service's own folders, allowed to it
        self.code = [Path(r).expanduser().resolve() for r in code]
        for root in self.code:
            if not self._allowed(root):
                raise RecyclerError(f"--trust-task-code {root}: not under an allowed root ({self._listed()})")

    def with_folder(self, folder: Path) -> AllowedRoots:
        """These roots and one of the service's own folders (its copies of submitted suites)."""
        return AllowedRoots(self.roots, self.code, self.private, [*self.own, folder])

    def check(self, path: str | Path, what: str) -> Path:
        """The resolved path, or PathNotAllowed naming `what`; nothing under it is read."""
        written = Path(path).expanduser()
        if ".." in written.parts:
            raise PathNotAllowed(f"{what}: '..' is not allowed in paths ({path})")
        if not written.is_absolute():
            written = self.roots[0] / written
        return self.inside(written, what)

    def inside(self, path: Path, what: str) -> Path:
        """An absolute path, resolved (symlinks followed), or PathNotAllowed naming `what`."""
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as error:  # a symlink loop
            raise PathNotAllowed(f"{what}: {path} cannot be resolved ({one_line(error, 100)})") from None
        if not self._allowed(resolved):
            raise PathNotAllowed(f"{what}: {path} is outside the allowed roots ({self._listed()})")
        return resolved

    def trusts_code(self, folder: Path) -> bool:
        """Whether a task folder lies under a root the operator trusted to run its Python."""
        resolved = folder.resolve()
        return any(resolved.is_relative_to(root) for root in self.code)

    def contains(self, resolved: Path) -> bool:
        """Whether an already resolved path lies under an allowed root; for checks made where a file is opened."""
        return self._allowed(resolved)

    def _allowed(self, resolved: Path) -> bool:
        if any(resolved.is_relative_to(folder) for folder in self.own):
            return True
        if any(resolved.is_relative_to(folder) for folder in self.private):
            return False
        return any(resolved.is_relative_to(root) for root in self.roots)

    def _listed(self) -> str:
        return ", ".join(map(str, self.roots))


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before any route sees it.

    The body is read here (at most limit + 1 bytes) and replayed to the app, so a missing or
    false Content-Length does not get past it.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                await self._too_large(send)
                return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        payload = json.dumps({"detail": f"request body over {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
