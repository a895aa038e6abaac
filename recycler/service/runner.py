"""The background work of the service: queued studies run one at a time on the Ray cluster, and
exports are written one at a time beside them. Every state change goes to the store first."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from recycler.errors import RecyclerError, one_line
from recycler.service.driver import drive_study
from recycler.service.security import AllowedRoots, PathNotAllowed
from recycler.service.specs import check_spec_paths
from recycler.service.task_check import check_suite_tasks
from recycler.service.store import Store
from recycler.spec import PoolSpec
from recycler.suite import SuiteSpec


class Runner:
    """Two daemon threads (studies, exports) that poll the store and wake early when told."""

    def __init__(self, store: Store, roots: AllowedRoots, *, address: str | None = None, storage: str | None = None,
                 poll_seconds: float = 2.0) -> None:
        self.store = store
        self.roots = roots  # checked again as a study starts: its files may have changed since it was queued
        self.address = address
        self.storage = storage  # the database every study's trials go to; None: each study folder's journal
        self.poll_seconds = poll_seconds
        self._stopping = threading.Event()
        self._wake = {"studies": threading.Event(), "exports": threading.Event()}
        self._threads: list[threading.Thread] = []
        self._ray_address: str | None = None

    def start(self) -> None:
        """Re-queue what the last process left running, join Ray (from the caller's thread, so Ray can
        install its signal handlers), and start the threads."""
        self.store.recover()
        self._init_ray()
        for kind, work in (("studies", self._run_next_study), ("exports", self._run_next_export)):
            thread = threading.Thread(target=self._loop, args=(kind, work), name=f"recycler-{kind}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self, kind: str) -> None:
        self._wake[kind].set()

    def stop(self, timeout: float = 120.0) -> None:
        """Ask the running study to stop after its trials in flight; it is queued again for the next start."""
        self._stopping.set()
        for event in self._wake.values():
            event.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _loop(self, kind: str, work: Callable[[], bool]) -> None:
        while not self._stopping.is_set():
            if not work():
                self._wake[kind].wait(self.poll_seconds)
                self._wake[kind].clear()

    def _init_ray(self) -> None:
        """Join (or start) the cluster here, so each study's driver process joins the same one."""
        import ray

        from recycler.cluster import connect_ray

        connect_ray(self.address)
        self._ray_address = ray.get_runtime_context().gcs_address

    def _run_next_study(self) -> bool:
        row = self.store.claim_next_study()
        if row is None:
            return False
        try:
            spec = PoolSpec.model_validate_json(row.spec)
            roots = self.roots.with_folder(self.store.snapshots)  # the suite copied at submission lies there
            check_spec_paths(spec, roots)
            if isinstance(spec.suite, SuiteSpec):
                check_suite_tasks(spec.suite, roots)
            outcome = drive_study(spec, self.store.study_folder(row.id), storage=self.storage, address=self._ray_address,
                                  should_stop=lambda: self._stopping.is_set() or self.store.cancel_requested(row.id))
        except (RecyclerError, PathNotAllowed) as error:
            self.store.finish_study(row.id, "failed", str(error))
            return True
        except Exception as error:  # noqa: BLE001 - a study that cannot be started fails alone; the runner goes on
            self.store.finish_study(row.id, "failed", f"{type(error).__name__}: {one_line(error, 400)}")
            return True
        if outcome.error is not None:
            self.store.finish_study(row.id, "failed", outcome.error)
        elif self.store.cancel_requested(row.id):
            self.store.finish_study(row.id, "cancelled")
        elif outcome.finished >= spec.search.trials:
            self.store.finish_study(row.id, "done")
        else:
            self.store.finish_study(row.id, "queued")
        return True

    def _run_next_export(self) -> bool:
        from recycler.export import export_trial

        row = self.store.claim_next_export()
        if row is None:
            return False
        try:
            export_trial(self.store.study_folder(row.study_id), row.trial, Path(row.out), inside=self.roots.contains)
        except Exception as error:  # noqa: BLE001 - any failure is the export's, reported on it
            message = str(error) if isinstance(error, RecyclerError) else f"{type(error).__name__}: {error}"
            self.store.finish_export(row.id, "failed", one_line(message, 400))
            return True
        self.store.finish_export(row.id, "done")
        return True
