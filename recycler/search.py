"""The search: an Optuna multi-objective study driven by ask-and-tell over a pool of workers.

Baselines (each checkpoint alone, the uniform average, the literature's merge methods at their
defaults) are scored first, so every front is read against them: those the search space can
express are its first trials, the others are scored beside the trials (recycler/preparation.py).
As many candidates are in flight as there are workers; a new one is asked for the moment a worker
frees up. The loop only schedules: each kind of work is a job class (a full evaluation, a screening
stage, the completion of a promoted trial, a side baseline), what comes back goes to the ledger
(recycler/ledger.py, the only writer of outcomes), and the study's coordination (by its storage:
a journal folder's lock, or a database's heartbeats) keeps drivers apart. Every finished trial is
in Optuna storage at once, so a killed search resumes where it stopped and never re-runs a finished
trial; with the study in a database, several drivers (on several machines) run it together.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from recycler.cluster import RayWorkers
from recycler.coordination import ask, claim_side_baseline
from recycler.errors import RecyclerError, one_line
from recycler.evaluate import Selection
from recycler.ledger import Ledger, finished_trials, running_trials
from recycler.preparation import PreparedStudy, prepare_study
from recycler.progress import TrialsBar
from recycler.recipes import MergeRecipe
from recycler.records import StoredTrial, record_candidate, stored_trials
from recycler.results import CandidateResult
from recycler.screening import FrontMember, Screening
from recycler.spec import PoolSpec
from recycler.worker_pools import Finished, SerialWorkers, WorkerPool


@dataclass(frozen=True)
class _TrialWork:
    """Work on a trial of the study."""

    trial: optuna.Trial
    recipe: MergeRecipe

    @property
    def name(self) -> str:
        return f"trial {self.trial.number}"


@dataclass(frozen=True)
class FullEvaluation(_TrialWork):
    """A trial scored on every example."""

    def examples(self, screening: Screening | None) -> Selection | None:
        return None


@dataclass(frozen=True)
class ScreeningStage(_TrialWork):
    """A trial scored on a screening stage's examples; screening then decides whether it goes on."""

    stage: int = 0
    screened: CandidateResult | None = None  # the earlier stages' results, put together

    def examples(self, screening: Screening | None) -> Selection | None:
        return screening.stage_examples(self.stage)


@dataclass(frozen=True)
class Completion(_TrialWork):
    """A trial screening promoted: the examples its screening stages left, put together with theirs."""

    screened: CandidateResult

    def examples(self, screening: Screening | None) -> Selection | None:
        return screening.rest


@dataclass(frozen=True)
class SideBaselineJob:
    """A baseline the search space cannot express, scored in full beside the trials; `claim` is its
    trial in the study's queue of them."""

    recipe: MergeRecipe
    label: str
    claim: int

    @property
    def name(self) -> str:
        return f"baseline '{self.label}'"

    def examples(self, screening: Screening | None) -> Selection | None:
        return None


TrialJob = FullEvaluation | ScreeningStage | Completion
Job = TrialJob | SideBaselineJob


SAME_FAILURE_CANDIDATES = 3  # candidates in a row failing with one reason end the search


@dataclass
class _FailureStreak:
    """Failures since the last recorded result: a search whose every candidate raises the same
    error, or whose workers keep dying, ends with one line instead of retrying forever."""

    deaths_allowed: int  # in a row: more than one candidate's retries on every worker
    reason: str | None = None  # the failure, without the files and numbers it names
    candidates: list[str] = field(default_factory=list)  # recipes failing with `reason`, in a row
    deaths: int = 0

    def succeeded(self) -> None:
        self.reason, self.candidates, self.deaths = None, [], 0

    def failed(self, job: Job, reason: str, died: bool) -> None:
        where = job.name
        if died:
            self.deaths += 1
            if self.deaths > self.deaths_allowed:
                raise RecyclerError(f"workers keep dying: {self.deaths} in a row without a result, the last while "
                                    f"scoring {where}: {reason}")
            return
        kind = re.sub(r"'[^']*'|\"[^\"]*\"|0x[0-9a-f]+|\d+", "…", reason)  # one failure whatever file, address or number it names
        if kind != self.reason:
            self.reason, self.candidates = kind, []
        recipe = json.dumps(job.recipe.to_json(), sort_keys=True)
        if recipe not in self.candidates:
            self.candidates.append(recipe)
        if len(self.candidates) >= SAME_FAILURE_CANDIDATES:
            raise RecyclerError(f"every candidate fails the same way ({len(self.candidates)} in a row, the last "
                                f"{where}): {reason}")


@dataclass
class _Loop:
    """One driver's run of the search: keeps its workers busy with a trial or a baseline, hands what
    comes back to the ledger (which retries what failed), and lets the study's coordination beat for
    what it has in flight and requeue the trials of drivers that stopped."""

    prepared: PreparedStudy
    spec: PoolSpec
    workers: WorkerPool[Job]
    ledger: Ledger
    progress: TrialsBar
    should_stop: Callable[[], bool]
    failures: _FailureStreak
    lost_baselines: dict[str, int] = field(default_factory=dict)  # side baselines whose worker failed, by label
    waiting: list[Job] = field(default_factory=list)  # work begun (promoted trials, baselines to score again)
    stopping: bool = False
    checked_lost: float = 0.0  # when the study was last checked for trials of a driver that stopped beating

    def run(self) -> None:
        while True:
            self._requeue_lost()
            self.stopping = self.stopping or self.should_stop()
            while self.workers.idle and self.waiting:  # even when stopping: begun, not new work
                self._submit(self._next_waiting())
            if not self.stopping:
                self._fill_idle_workers()
            if not self.workers.jobs() and self._done():
                return
            finished = self.workers.next_finished(timeout=self.spec.resources.heartbeat_seconds)
            if finished is not None:
                self._record(finished)

    def _next_waiting(self) -> Job:
        """Promoted trials first (their screening stages are already paid for), then baselines to score again."""
        index = next((i for i, job in enumerate(self.waiting) if not isinstance(job, SideBaselineJob)), 0)
        return self.waiting.pop(index)

    def _done(self) -> bool:
        """With nothing in flight here: whether this driver is through. It waits while the budget is
        not met and other drivers' trials are in flight, since one that fails is queued again."""
        if self.waiting:  # for a worker (a replacement still starting)
            return False
        return self.stopping or finished_trials(self.prepared.study) >= self.spec.search.trials

    def _requeue_lost(self) -> None:
        if time.monotonic() - self.checked_lost < self.spec.resources.heartbeat_seconds:
            return
        self.checked_lost = time.monotonic()
        for study in (self.prepared.study, self.prepared.side_queue):
            self.prepared.coordination.requeue_lost(study)

    def _submit(self, job: Job) -> None:
        self.workers.submit(job.recipe, job, examples=job.examples(self.prepared.screening))

    def _fill_idle_workers(self) -> None:
        prepared = self.prepared
        study, coordination = prepared.study, prepared.coordination
        while self.workers.idle and (claim := claim_side_baseline(prepared.storage, prepared.side_queue)) is not None:
            number, label = claim
            coordination.beat(prepared.side_queue, number)
            self._submit(SideBaselineJob(prepared.side_recipes[label], label, number))
        while self.workers.idle and finished_trials(study) + running_trials(study) < self.spec.search.trials:
            trial = ask(study)
            coordination.beat(study, trial.number)
            recipe = prepared.space.suggest(trial)
            record_candidate(trial, recipe)
            screened = prepared.screening is not None and StoredTrial.running(trial).baseline is None  # baselines: in full
            self._submit((ScreeningStage if screened else FullEvaluation)(trial, recipe))

    def _record(self, finished: Finished[Job]) -> None:
        job = finished.job
        if isinstance(job, SideBaselineJob):
            self._record_side_baseline(job, finished)
            return
        try:
            still_running = self._record_trial(job, finished)
        except optuna.exceptions.UpdateFinishedTrialError:  # taken for lost while the database was away
            warnings.warn(f"{job.name} was taken for lost by a driver while this one could not reach the database; "
                          "its result is dropped and its retry scores it again", stacklevel=1)
            still_running = False
        except (RecyclerError, *_LOST_CONNECTION):
            raise
        except Exception as error:  # a result this driver cannot record fails its trial, not the search
            still_running = False
            self._fail(job, f"recording its result failed: {type(error).__name__}: {one_line(error, 300)}", died=False)
        if not still_running:
            self.prepared.coordination.stop_beating(self.prepared.study, job.trial.number)

    def _record_trial(self, job: TrialJob, finished: Finished[Job]) -> bool:
        """Store a trial's outcome; True if it goes on to another stage."""
        result = finished.result
        if finished.failed:
            if isinstance(job, (ScreeningStage, Completion)) and job.screened is not None:  # the failed stage's cost is unknown
                self.ledger.charge_screening(job.trial, job.screened)
            self._fail(job, result.error, died=finished.died)
            return False
        if isinstance(job, ScreeningStage):
            still_running = self._screened(job, result)
            self.failures.succeeded()
            return still_running
        if isinstance(job, Completion):
            result = job.screened.then(result, self.prepared.full_scores)
        self.progress.trial_finished(self.ledger.record(job.trial, result))
        self.failures.succeeded()
        return False

    def _screened(self, job: ScreeningStage, result: CandidateResult) -> bool:
        """Take a screened trial to its next stage (or the rest of its examples) if it can still
        reach the front of fully evaluated trials, else drop it (told to the sampler as pruned)
        with its stages' scores; True if it goes on."""
        prepared = self.prepared
        if result.bad is not None:
            self.progress.trial_finished(self.ledger.record(job.trial, result))
            return False
        if job.screened is not None:
            result = job.screened.then(result, prepared.full_scores)
        info, screening = prepared.info, prepared.screening
        history = [FrontMember(t.number, t.values, t.subset_scores, t.standard_errors)
                   for t in stored_trials(prepared.study, complete_only=True)
                   if t.subset_scores is not None]  # (older trials did not keep theirs: never compared)
        best = {t.number for t in prepared.study.best_trials}
        front = [member for member in history if member.number in best]
        candidate = screening.on_subset(result.examples, info.objectives, job.stage)
        verdict = screening.verdict(candidate, front, info.objectives, info.directions, job.stage, history)
        self.ledger.screened(job.trial, result.scores, verdict)
        if verdict.finish:
            last = job.stage == len(screening.stages) - 1
            self.waiting.append(Completion(job.trial, job.recipe, result) if last
                                else ScreeningStage(job.trial, job.recipe, job.stage + 1, result))
            return True
        self.ledger.drop(job.trial, result)
        self.progress.trial_finished(None)
        return False

    def _fail(self, job: TrialJob, reason: str, died: bool) -> None:
        """Fail the trial with its one-line reason, queue it again while its retries last, and end the
        search once failures repeat (_FailureStreak)."""
        self.ledger.fail(job.trial, reason)
        self.progress.trial_finished(None)
        self.failures.failed(job, reason, died)

    def _record_side_baseline(self, job: SideBaselineJob, finished: Finished[Job]) -> None:
        """Store a side baseline's scores on the study and close its claim; a lost worker's baseline
        is scored again by this driver while retries remain."""
        result, prepared = finished.result, self.prepared
        if finished.failed:
            self.failures.failed(job, result.error, finished.died)
            self.lost_baselines[job.label] = self.lost_baselines.get(job.label, 0) + 1
            if self.lost_baselines[job.label] <= self.spec.search.max_retries:  # as a failed trial would be
                self.waiting.append(job)
                return
        else:
            self.failures.succeeded()
        self.ledger.record_side_baseline(prepared.side_queue, job.claim, job.label, job.recipe, result)
        prepared.coordination.stop_beating(prepared.side_queue, job.claim)


# What a database that went away raises: the failed statement, or the next one on the same session
# before Optuna has rolled it back.
_LOST_CONNECTION = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.PendingRollbackError)


def run_search(
    spec: PoolSpec,
    folder: str | Path,
    *,
    storage: str | None = None,
    address: str | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    in_process: bool = False,
) -> optuna.Study:
    """Run (or continue) the study until spec.search.trials trials have finished.

    should_stop, checked each time a worker frees up, ends the search early once the trials in flight finish.
    in_process scores the candidates in this process, one at a time, without Ray (recycler/worker_pools.py).
    """
    try:
        return _search(spec, Path(folder), storage, address, progress, should_stop or (lambda: False), in_process)
    except (*_LOST_CONNECTION, optuna.exceptions.StorageInternalError) as error:
        cause = error.__cause__ if isinstance(error, optuna.exceptions.StorageInternalError) else error
        if not isinstance(cause, _LOST_CONNECTION):  # bad data, not a lost connection
            raise
        raise RecyclerError(f"--storage: lost the study's database ({one_line(getattr(cause, 'orig', None) or cause, 200)}); every "
                            "finished trial is kept there: run the same command again to resume") from None


def _search(spec: PoolSpec, folder: Path, storage: str | None, address: str | None, progress: bool,
            should_stop: Callable[[], bool], in_process: bool) -> optuna.Study:
    prepared = prepare_study(spec, folder, storage)
    with prepared.coordination.holding():
        for study in (prepared.study, prepared.side_queue):
            prepared.coordination.requeue_interrupted(study)
        if finished_trials(prepared.study) >= spec.search.trials and not _side_baselines_waiting(prepared):
            return prepared.study
        workers: WorkerPool[Job] = SerialWorkers(spec) if in_process else RayWorkers(spec, address, progress=progress)
        bar = TrialsBar(prepared.study, prepared.info, spec.search.trials, progress, prepared.screening is not None)
        try:
            failures = _FailureStreak(max(3, 2 * spec.resources.workers, spec.search.max_retries + 2))
            ledger = Ledger(prepared.study, folder, prepared.info.objectives, prepared.screening, spec.search.max_retries)
            _Loop(prepared, spec, workers, ledger, bar, should_stop, failures).run()
        finally:
            bar.close()
            workers.close()
    return prepared.study


def _side_baselines_waiting(prepared: PreparedStudy) -> bool:
    return bool(prepared.side_queue.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
