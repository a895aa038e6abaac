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
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def entries(self) -> list[AuditEntry]:
        if not self.path.is_file():
            return []
        return [AuditEntry.model_validate(json.loads(line)) for line in self.path.read_text().splitlines() if line.strip()]
