"""Named bearer tokens with scopes, kept as sha256 hashes in DATA/tokens.json.

A token is a random 32-byte secret, so a plain sha256 is as good as a slow hash and a leaked file
gives nobody a token. The file is read again whenever it changes, so `recycler serve token add` and
`revoke` take effect on a running server. The service's single token of old (DATA/token or
RECYCLER_TOKEN) keeps working as `default`, with every scope.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

from recycler.errors import RecyclerError
from recycler.files import write_text_atomic

Scope = Literal["read", "submit", "export"]
SCOPES: tuple[Scope, ...] = get_args(Scope)  # each allows what the ones before it allow
DEFAULT_NAME = "default"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Caller:
    """Who made a request: the token's name and scope."""

    name: str
    scope: Scope

    def may(self, needed: Scope) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(needed)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    scope: Scope
    sha256: str
    created: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The tokens of one data folder; `default` is the service's own token, if it has one."""

    def __init__(self, path: Path, default: str | None = None) -> None:
        self.path = Path(path)
        self._default = None if default is None else TokenEntry(DEFAULT_NAME, "export", _digest(default), 0.0)
        self._cache: tuple[tuple[int, int], list[TokenEntry]] | None = None

    def entries(self) -> list[TokenEntry]:
        """The named tokens, as the file holds them now."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # each atomic write is a new inode
        if self._cache is None or self._cache[0] != stamp:
            try:
                rows = json.loads(self.path.read_text())["tokens"]
                self._cache = stamp, [TokenEntry(**row) for row in rows]
            except (ValueError, KeyError, TypeError) as error:
                raise RecyclerError(f"{self.path}: not a tokens file ({error})") from None
        return self._cache[1]

    def add(self, name: str, scope: Scope) -> str:
        """A new token's secret, shown once: only its hash is kept."""
        if not _NAME.fullmatch(name) or name == DEFAULT_NAME:
            raise RecyclerError(f"token name '{name}': use 1-64 letters, digits, '_', '.' or '-' (not '{DEFAULT_NAME}')")
        if scope not in SCOPES:
            raise RecyclerError(f"--scope {scope}: one of {', '.join(SCOPES)}")
        entries = self.entries()
        if any(entry.name == name for entry in entries):
            raise RecyclerError(f"token '{name}' exists; revoke it first")
        token = secrets.token_urlsafe(32)
        self._write([*entries, TokenEntry(name, scope, _digest(token), time.time())])
        return token

    def revoke(self, name: str) -> None:
        entries = self.entries()
        if not any(entry.name == name for entry in entries):
            known = ", ".join(entry.name for entry in entries) or "none"
            raise RecyclerError(f"token '{name}': no such token (tokens: {known})")
        self._write([entry for entry in entries if entry.name != name])

    def identify(self, header: str | None) -> Caller | None:
        """The caller an `Authorization: Bearer TOKEN` header names, or None. Every hash is
        compared, each in constant time, so the time taken says nothing about which one matched."""
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        digest = _digest(given.strip())
        found = None
        for entry in ([self._default] if self._default else []) + self.entries():
            if hmac.compare_digest(digest, entry.sha256):
                found = Caller(entry.name, entry.scope)
        return found

    def _write(self, entries: list[TokenEntry]) -> None:
        write_text_atomic(self.path, json.dumps({"tokens": [asdict(entry) for entry in entries]}, indent=1) + "\n")
        self.path.chmod(0o600)
