"""What the search loop schedules on: a pool of workers, each scoring one candidate at a time.

Two implementations: the Ray pool (recycler/cluster.py), workers placed across a cluster and
replaced when they die, and `SerialWorkers`, one worker in this process scoring the jobs in the
order they were handed out, with as many slots as the spec asks workers. The loop cannot tell them
apart, so the search's logic (budget, retries, screening, stopping, resume) runs the same on both;
the serial pool needs no Ray, which keeps tests of that logic fast.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from recycler.errors import one_line
from recycler.recipes import MergeRecipe
from recycler.results import CandidateResult
from recycler.spec import PoolSpec
from recycler.workers import MergeWorker, worker_device

JobT = TypeVar("JobT")


@dataclass(frozen=True)
class Finished(Generic[JobT]):
    """A job's outcome: the worker's result (possibly a bad candidate it reported), or a failed
    result with the exception in one line when scoring `raised` (the worker is kept), or with why
    when the worker `died` (it was lost and is replaced)."""

    job: JobT
    result: CandidateResult
    died: bool
    raised: bool = False

    @property
    def failed(self) -> bool:
        """Whether the job ended without a result, so the trial is failed and retried."""
        return self.died or self.raised


def raised_error(error: BaseException) -> str:
    """An exception raised while scoring, as the one-line reason a failed trial keeps."""
    return f"{type(error).__name__}: {one_line(error, 400)}"


class WorkerPool(Protocol[JobT]):
    """Workers the loop hands candidates to; `idle` holds a free slot per worker ready for a job."""

    idle: list[Any]

    def submit(self, recipe: MergeRecipe, job: JobT, examples: dict[str, list[int]] | None = None) -> None:
        """Score the recipe (on those examples only, when given) in an idle slot; `job` comes back with its result."""

    def jobs(self) -> list[JobT]:
        """The jobs in flight."""

    def next_finished(self, timeout: float) -> Finished[JobT] | None:
        """The next job to finish, waiting up to `timeout` seconds; None if none did."""

    def close(self) -> None:
        """Stop every worker."""


class SerialWorkers(Generic[JobT]):
    """One worker in this process; `resources.workers` slots, whose jobs it scores one after another
    in the order they were handed out, so the loop has as many candidates in flight as with Ray."""

    def __init__(self, spec: PoolSpec) -> None:
        self.worker = MergeWorker(spec, worker_device(spec).type)
        self.idle: list[Any] = list(range(spec.resources.workers))
        self._queued: list[tuple[Any, MergeRecipe, JobT, dict[str, list[int]] | None]] = []

    def submit(self, recipe: MergeRecipe, job: JobT, examples: dict[str, list[int]] | None = None) -> None:
        self._queued.append((self.idle.pop(), recipe, job, examples))

    def jobs(self) -> list[JobT]:
        return [job for _, _, job, _ in self._queued]

    def next_finished(self, timeout: float) -> Finished[JobT] | None:
        if not self._queued:  # nothing handed out: wait, as the Ray pool does, for other drivers' trials
            time.sleep(timeout)
            return None
        slot, recipe, job, examples = self._queued.pop(0)
        self.idle.append(slot)
        try:
            return Finished(job, self.worker.evaluate(recipe.to_json(), examples), died=False)
        except Exception as error:  # scoring raised: the worker lives on, as a Ray worker does
            return Finished(job, CandidateResult.failed(raised_error(error)), died=False, raised=True)

    def close(self) -> None:
        self._queued.clear()
