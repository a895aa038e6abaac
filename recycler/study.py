"""A study folder: what was searched (study.json) and the Optuna storage that holds every trial.

The folder is the unit a user names (`recycler front STUDY`); study.json pins the pool by its
fingerprint so a study is never continued or exported against a different pool.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from recycler.coordination import database_storage
from recycler.errors import RecyclerError
from recycler.files import write_text_atomic
from recycler.spec import PoolSpec

INFO_FILE = "study.json"
JOURNAL_FILE = "journal.log"


@dataclass(frozen=True)
class StudyInfo:
    """What a study searches: enough to reload its pool and suite and to read its trials."""

    name: str
    fingerprint: str
    spec: dict
    objectives: list[str]
    directions: list[str]
    held_out: list[str]
    storage: str | None

    @property
    def pool_spec(self) -> PoolSpec:
        return PoolSpec.model_validate(self.spec)

    @property
    def binding(self) -> dict:
        """What a study's trials are only comparable under: the pool, the objectives, the space."""
        return {"fingerprint": self.fingerprint, "objectives": self.objectives, "space": self.spec["search"]["space"]}

    @property
    def description(self) -> dict:
        """What a database keeps of it for readers elsewhere: everything but where it is stored."""
        return {key: value for key, value in asdict(self).items() if key != "storage"}

    @classmethod
    def described(cls, description: dict, storage: str) -> StudyInfo:
        return cls(**description, storage=storage)

    @property
    def checkpoints(self) -> list[str]:
        return [c["name"] for c in self.spec["checkpoints"]]


def read_info(folder: Path) -> StudyInfo:
    path = Path(folder) / INFO_FILE
    if not is_study_folder(folder):
        raise RecyclerError(f"{folder}: not a study folder (no {INFO_FILE})")
    try:
        return StudyInfo(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise RecyclerError(f"{path}: unreadable study file ({error})") from None


def write_info(folder: Path, info: StudyInfo) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / INFO_FILE, json.dumps(asdict(info), indent=2))


def is_study_folder(folder: Path) -> bool:
    return (Path(folder) / INFO_FILE).is_file()


def bind_folder(folder: Path, info: StudyInfo) -> StudyInfo:
    """Write a new study's info into its folder, or return the folder's own if it searches the same
    pool, objectives and space: a study is never continued against anything else."""
    if not is_study_folder(folder):
        write_info(folder, info)
        return info
    existing = read_info(folder)
    if existing.fingerprint != info.fingerprint:
        raise RecyclerError(f"{folder}: study belongs to another pool (fingerprint {existing.fingerprint[:12]}, this pool {info.fingerprint[:12]})")
    if existing.binding != info.binding:
        raise RecyclerError(f"{folder}: study searched other objectives or another space; use a new study folder")
    return existing


def storage_for(folder: Path, info: StudyInfo, heartbeat_seconds: int | None = None) -> optuna.storages.BaseStorage:
    """The study's Optuna storage: the database at its URL if one was given, else a journal file in
    the folder. A driver asks for heartbeats (recycler/coordination.py); a reader does not."""
    if info.storage:
        return database_storage(info.storage, heartbeat_seconds)
    return JournalStorage(JournalFileBackend(str(Path(folder) / JOURNAL_FILE)))


def load_study(folder: str | Path) -> tuple[optuna.Study, StudyInfo]:
    """An existing study and its info, for reading fronts and exporting."""
    folder = Path(folder)
    info = read_info(folder)
    try:
        study = optuna.load_study(study_name=info.name, storage=storage_for(folder, info))
    except KeyError:
        raise RecyclerError(f"{folder}: the study '{info.name}' is not in its storage") from None
    return study, info
