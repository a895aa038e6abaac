"""Who did what through the service: one JSON line per submit, cancel and export in DATA/audit.jsonl.

The file is only ever appended to, each line flushed and fsynced before the request is answered,
so the log survives a crash or a restart with every action that was acknowledged.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from recycler.service.models import AuditedAction, AuditEntry


class AuditLog:
    """The append-only log of one data folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, token: str, action: AuditedAction, target: str, address: str | None) -> None:
        entry = AuditEntry(time=time.time(), token=token, action=action, target=target, address=address)
        line = (entry.model_dump_json() + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a line torn by a crash stays apart, and is skipped when read
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def entries(self) -> list[AuditEntry]:
        """Every complete entry, oldest first (a line torn by a crash is left out)."""
        if not self.path.is_file():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            try:
                entries.append(AuditEntry.model_validate(json.loads(line)))
            except ValueError:  # pydantic's ValidationError and json's errors are ValueErrors
                continue
        return entries
