"""The service's durable registry: studies and exports with their states, in one SQLite file.

Nothing about a study lives only in memory, so a restarted server finds its queue as it was; a
study's trials themselves live in its own study folder, as for `recycler run`.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import get_args

from recycler.service.models import ExportState, StudyState

STUDY_STATES = get_args(StudyState)
EXPORT_STATES = get_args(ExportState)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL, spec TEXT NOT NULL, budget INTEGER NOT NULL,
    error TEXT, cancel INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS exports (
    id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(id), trial INTEGER NOT NULL, out TEXT NOT NULL,
    state TEXT NOT NULL, error TEXT, created REAL NOT NULL);
"""


@dataclass(frozen=True)
class StudyRow:
    id: str
    name: str
    state: str
    spec: str
    budget: int
    error: str | None
    cancel: bool
    created: float
    updated: float


@dataclass(frozen=True)
class ExportRow:
    id: str
    study_id: str
    trial: int
    out: str
    state: str
    error: str | None
    created: float


class Store:
    """The registry in DATA/service.db; study folders are DATA/studies/ID, the suites copied at
    submission DATA/suites/*."""

    def __init__(self, data: Path) -> None:
        self.data = Path(data)
        self.snapshots = self.data / "suites"
        self.data.mkdir(parents=True, exist_ok=True)
        self.path = self.data / "service.db"
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        finally:
            db.close()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One short transaction on its own connection: safe from the API's and the runner's threads."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def study_folder(self, study_id: str) -> Path:
        return self.data / "studies" / study_id

    def recover(self) -> None:
        """After a restart: work left running by the last process is queued again (search resumes)."""
        with self._connect() as db:
            db.execute("UPDATE studies SET state = CASE cancel WHEN 1 THEN 'cancelled' ELSE 'queued' END, updated = ? "
                       "WHERE state = 'running'", (time.time(),))
            db.execute("UPDATE exports SET state = 'queued' WHERE state = 'running'")

    def add_study(self, name: str, spec_json: str, budget: int) -> StudyRow:
        now = time.time()
        row = StudyRow(uuid.uuid4().hex[:12], name, "queued", spec_json, budget, None, False, now, now)
        with self._connect() as db:
            db.execute("INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (row.id, row.name, row.state, row.spec, row.budget, row.error, int(row.cancel), row.created, row.updated))
        return row

    def add_elsewhere(self, name: str, spec_json: str, budget: int) -> StudyRow | None:
        """Register a study another machine runs in the shared database, unless a study of that name
        is known here already (checked and added in one transaction)."""
        now = time.time()
        row = StudyRow(uuid.uuid4().hex[:12], name, "elsewhere", spec_json, budget, None, False, now, now)
        with self._connect() as db:
            if db.execute("SELECT 1 FROM studies WHERE name = ?", (name,)).fetchone():
                return None
            db.execute("INSERT INTO studies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (row.id, row.name, row.state, row.spec, row.budget, row.error, int(row.cancel), row.created, row.updated))
        return row

    def study(self, study_id: str) -> StudyRow | None:
        with self._connect() as db:
            found = db.execute("SELECT * FROM studies WHERE id = ?", (study_id,)).fetchone()
        return _study(found) if found else None

    def studies(self) -> list[StudyRow]:
        with self._connect() as db:
            return [_study(r) for r in db.execute("SELECT * FROM studies ORDER BY created, id")]

    def claim_next_study(self) -> StudyRow | None:
        """The oldest queued study, marked running in the same transaction."""
        with self._connect() as db:
            found = db.execute("SELECT * FROM studies WHERE state = 'queued' ORDER BY created, id LIMIT 1").fetchone()
            if not found:
                return None
            db.execute("UPDATE studies SET state = 'running', updated = ? WHERE id = ?", (time.time(), found[0]))
        return replace(_study(found), state="running")

    def finish_study(self, study_id: str, state: str, error: str | None = None) -> None:
        assert state in STUDY_STATES
        with self._connect() as db:
            db.execute("UPDATE studies SET state = ?, error = ?, updated = ? WHERE id = ?", (state, error, time.time(), study_id))

    def request_cancel(self, study_id: str) -> None:
        """A queued study is cancelled at once; a running one when its runner next checks."""
        with self._connect() as db:
            db.execute("UPDATE studies SET cancel = 1, updated = ?, state = CASE state WHEN 'queued' THEN 'cancelled' "
                       "ELSE state END WHERE id = ? AND state IN ('queued', 'running')", (time.time(), study_id))

    def cancel_requested(self, study_id: str) -> bool:
        with self._connect() as db:
            found = db.execute("SELECT cancel FROM studies WHERE id = ?", (study_id,)).fetchone()
        return bool(found and found[0])

    def add_export(self, study_id: str, trial: int, out: str) -> ExportRow:
        row = ExportRow(uuid.uuid4().hex[:12], study_id, trial, out, "queued", None, time.time())
        with self._connect() as db:
            db.execute("INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (row.id, row.study_id, row.trial, row.out, row.state, row.error, row.created))
        return row

    def export(self, export_id: str) -> ExportRow | None:
        with self._connect() as db:
            found = db.execute("SELECT * FROM exports WHERE id = ?", (export_id,)).fetchone()
        return ExportRow(*found) if found else None

    def claim_next_export(self) -> ExportRow | None:
        with self._connect() as db:
            found = db.execute("SELECT * FROM exports WHERE state = 'queued' ORDER BY created, id LIMIT 1").fetchone()
            if not found:
                return None
            db.execute("UPDATE exports SET state = 'running' WHERE id = ?", (found[0],))
        return replace(ExportRow(*found), state="running")

    def finish_export(self, export_id: str, state: str, error: str | None = None) -> None:
        assert state in EXPORT_STATES
        with self._connect() as db:
            db.execute("UPDATE exports SET state = ?, error = ? WHERE id = ?", (state, error, export_id))


def _study(row: tuple) -> StudyRow:
    return StudyRow(*row[:6], bool(row[6]), *row[7:])
