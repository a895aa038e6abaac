"""Several drivers on one study: what lets `recycler run` on two machines share a study in a database.

Each driver beats Optuna's heartbeat (RDBStorage's trial heartbeats) for every trial it has in
flight, from a thread of its own, so a driver busy starting a worker still beats. A trial whose
driver stopped beating for the grace period is failed and queued again by whichever driver notices
first (`optuna.storages.fail_stale_trials`). Baselines the search space cannot express are not
trials of the study; they wait in a companion study of their own, from which each driver claims
one atomically (the storage's WAITING→RUNNING change, as Optuna pops enqueued trials), so each is
scored once. A journal file has no heartbeats: one driver at a time holds its study folder's lock.
The two ways are two `Coordination`s (`SharedDatabase`, `JournalFolder`): the search asks the
study's for what it needs and never asks which storage it has.
"""

from __future__ import annotations

import fcntl
import os
import random
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from recycler.errors import RecyclerError
from recycler.records import (
    StoredTrial,
    is_beating,
    mark_beating,
    queue_again,
    queue_side_baseline,
    side_baseline_label,
)

GRACE_BEATS = 3  # heartbeats a driver may miss before its trials are presumed lost
TABLE_CREATION_TRIES = 3
ORPHAN_GRACES = 10  # grace periods after which a RUNNING trial that never beat is presumed lost
LOCK_FILE = "driver.lock"


def database_storage(url: str, heartbeat_seconds: int | None) -> RDBStorage:
    """A database storage; with `heartbeat_seconds`, one that drivers beat and that requeues the
    trials of a driver that stopped beating.

    Optuna creates its tables on first use; two drivers starting together on an empty database both
    try, and the loser's CREATE fails on what the winner made. It tries again, and finds them."""
    heartbeat: dict[str, Any] = {}
    if heartbeat_seconds is not None:
        heartbeat = {"heartbeat_interval": heartbeat_seconds, "grace_period": GRACE_BEATS * heartbeat_seconds,
                     "heartbeat_stale_trial_callback": queue_lost_work}

    def connect() -> RDBStorage:
        with warnings.catch_warnings():  # experimental since Optuna 2.9, and what Study.optimize relies on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, **heartbeat)

    for _ in range(TABLE_CREATION_TRIES - 1):
        try:
            return connect()
        except (sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.IntegrityError):
            time.sleep(1.0)
    return connect()


def queue_lost_work(study: optuna.Study, trial: FrozenTrial) -> None:
    """A trial of a driver that stopped beating (now failed): queue its work again. A trial lost
    before its parameters were drawn had nothing evaluated and is failed only; being lost does not
    use up an attempt."""
    label = side_baseline_label(trial)
    if label is not None:
        queue_side_baseline(study, label)
        return
    stored = StoredTrial.of(trial)
    if stored.recipe is not None:
        queue_again(study, stored, attempt=stored.attempt)


def fail_lost_trials(study: optuna.Study, storage: RDBStorage) -> None:
    """Fail and requeue the trials whose driver stopped beating, and those that never beat: a driver
    lost between asking for a trial and its first beat (Optuna takes a trial without heartbeats for
    alive). A driver marks a trial as beating right after its first beat, so a RUNNING trial without
    the mark for ORPHAN_GRACES grace periods is lost; the margin absorbs drivers' clock skew."""
    with warnings.catch_warnings():  # experimental since Optuna 2.9, and what Study.optimize calls
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    grace = storage.get_heartbeat_interval() * GRACE_BEATS
    cutoff = datetime.now() - timedelta(seconds=ORPHAN_GRACES * grace)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_beating(trial) or trial.datetime_start is None or trial.datetime_start > cutoff:
            continue
        trial_id = _trial_id(storage, study, trial.number)
        try:
            failed = storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # another driver failed it first
            continue
        if failed:
            queue_lost_work(study, storage.get_trial(trial_id))


def ask(study: optuna.Study) -> optuna.Trial:
    """`study.ask()`, without Optuna's warning that heartbeats are meant for `Study.optimize`: here
    the driver beats them itself."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


class Heartbeat:
    """Beats, every interval, for the trials this driver has in flight in a database, by storage trial id."""

    def __init__(self, storage: RDBStorage, seconds: float) -> None:
        self.storage, self.seconds = storage, seconds
        self._trials: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recycler-heartbeat", daemon=True)
        self._thread.start()

    def add(self, study: optuna.Study, number: int) -> None:
        """Beat for this trial from now on; the first beat is now, and the trial is marked as beating
        (see `fail_lost_trials`), so a driver killed at any point leaves a trial that goes stale."""
        trial_id = _trial_id(self.storage, study, number)
        self.storage.record_heartbeat(trial_id)
        mark_beating(self.storage, trial_id)
        with self._lock:
            self._trials.add(trial_id)

    def remove(self, study: optuna.Study, number: int) -> None:
        trial_id = _trial_id(self.storage, study, number)
        with self._lock:
            self._trials.discard(trial_id)

    def close(self) -> None:
        """Stop beating; a beat stuck on a database that went away does not hold the driver's exit."""
        self._stop.set()
        self._thread.join(timeout=self.seconds)

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            with self._lock:
                trials = list(self._trials)
            for trial_id in trials:
                try:
                    self.storage.record_heartbeat(trial_id)
                except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):  # a database
                    # restarting: the next beat tries again, and the search reports a database that stays away
                    break


def _trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of a study's trial, through the storage's public lookups."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def claim_side_baseline(storage: optuna.storages.BaseStorage, claims: optuna.Study) -> tuple[int, str] | None:
    """Take one waiting side baseline for this driver: (its claim's trial number, its label), or
    None when every one is taken. The claim is the storage's atomic WAITING→RUNNING change."""
    for trial in claims.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = _trial_id(storage, claims, trial.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial.number, side_baseline_label(trial)
        except optuna.exceptions.UpdateFinishedTrialError:  # another driver took and finished it
            continue
    return None


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold the study folder for this driver while it runs a study kept in the folder's journal file,
    which has no heartbeats; the lock goes with the process, so a killed driver does not keep it."""
    path = Path(folder) / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RecyclerError(f"{folder}: another recycler run ({holder}) is running this study; wait for it, or keep "
                                "the study in a database (--storage) to run several drivers on it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()



class Coordination(Protocol):
    """How the drivers of one study keep out of each other's way; the study's storage decides which
    (`coordination_for`), and the search calls only these."""

    def holding(self) -> AbstractContextManager[None]:
        """Hold the study for this driver while it runs."""

    def sampler_seed(self, seed: int) -> int:
        """The seed of this driver's sampler, from the spec's seed moved on by the trials run."""

    def requeue_interrupted(self, study: optuna.Study) -> None:
        """At start: fail the trials a stopped driver left running, and queue their work again."""

    def requeue_lost(self, study: optuna.Study) -> None:
        """While running: the same for trials of drivers that stopped since."""

    def beat(self, study: optuna.Study, number: int) -> None:
        """This driver has the trial in flight from now on."""

    def stop_beating(self, study: optuna.Study, number: int) -> None:
        """This driver is through with the trial."""


class JournalFolder:
    """A study in its folder's journal file, which has no heartbeats: one driver at a time holds the
    folder's lock, so every trial left running at start was interrupted, and none is lost meanwhile."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def holding(self) -> AbstractContextManager[None]:
        return folder_lock(self.folder)

    def sampler_seed(self, seed: int) -> int:
        return seed

    def requeue_interrupted(self, study: optuna.Study) -> None:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
            queue_lost_work(study, trial)

    def requeue_lost(self, study: optuna.Study) -> None:
        """No other driver runs this study, so none can lose a trial of it."""

    def beat(self, study: optuna.Study, number: int) -> None:
        """Nothing to beat: the folder's lock says this driver is alive."""

    def stop_beating(self, study: optuna.Study, number: int) -> None:
        """Nothing to beat."""


class SharedDatabase:
    """A study in a database, shared by any number of drivers: each beats for its trials in flight,
    and any of them fails and requeues the trials of a driver that stopped beating. Each driver's
    sampler is seeded apart, so drivers running together do not propose the same points."""

    def __init__(self, storage: RDBStorage, heartbeat_seconds: float) -> None:
        self.storage, self.heartbeat_seconds = storage, heartbeat_seconds
        self._heartbeat: Heartbeat | None = None

    @contextmanager
    def holding(self) -> Iterator[None]:
        self._heartbeat = Heartbeat(self.storage, self.heartbeat_seconds)
        try:
            yield
        finally:
            self._heartbeat.close()
            self._heartbeat = None

    def sampler_seed(self, seed: int) -> int:
        return seed + random.SystemRandom().randrange(1 << 30)

    def requeue_interrupted(self, study: optuna.Study) -> None:
        fail_lost_trials(study, self.storage)

    def requeue_lost(self, study: optuna.Study) -> None:
        fail_lost_trials(study, self.storage)

    def beat(self, study: optuna.Study, number: int) -> None:
        self._heartbeat.add(study, number)

    def stop_beating(self, study: optuna.Study, number: int) -> None:
        self._heartbeat.remove(study, number)


def coordination_for(storage: optuna.storages.BaseStorage, folder: Path, heartbeat_seconds: float) -> Coordination:
    """A database's drivers share the study through heartbeats; a journal file's hold its folder."""
    if isinstance(storage, RDBStorage):
        return SharedDatabase(storage, heartbeat_seconds)
    return JournalFolder(folder)
