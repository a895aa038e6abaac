"""The ledger: the only code that writes a study's outcomes.

A worker's result becomes a completed trial (its scores on the trial, its per-example results in
the study folder), a failed one (its one-line reason, queued again while retries last), a trial
dropped at screening, or a baseline scored beside the search. The budget is counted here too, so
the search driver and the service agree on what a finished trial is. Each writer takes the study
and what it needs explicitly. Which trials a stopped driver left running depends on the storage,
so the study's coordination fails and requeues those (recycler/coordination.py).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from recycler.examples import write_results
from recycler.recipes import MergeRecipe
from recycler.records import (
    SideBaseline,
    StoredTrial,
    queue_again,
    record_cost,
    record_error,
    record_scores,
    record_screening,
    record_side_baseline,
    record_subset_scores,
    stored_trials,
)
from recycler.results import CandidateResult
from recycler.screening import Screening, Verdict


def finished_trials(study: optuna.Study) -> int:
    """Trials that count against the budget: completed, dropped at screening, or failed for good with
    an error and not queued again. Trials interrupted by a killed search carry no error and do not count."""
    trials = stored_trials(study)
    retried = {t.retry_of for t in trials if t.retry_of is not None}
    return sum(
        1
        for t in trials
        if t.complete or t.screened_out or (t.state == TrialState.FAIL and t.error is not None and t.number not in retried)
    )


@dataclass(frozen=True)
class ExamplesSpent:
    """What a study's trials ran through the model: examples, token positions (None unless every
    trial counted them), and the examples screening saved, each dropped trial having skipped the
    rest of a full evaluation (a completed trial's count)."""

    scored: int
    forward_tokens: int | None
    dropped: int
    saved: int


def examples_spent(study: optuna.Study) -> ExamplesSpent | None:
    """The study's ExamplesSpent; None for a study from before costs were recorded."""
    trials = [t for t in stored_trials(study) if t.examples_scored is not None]
    if not trials:
        return None
    full = max((t.examples_scored for t in trials if t.complete), default=None)
    dropped = [t for t in trials if t.screened_out]
    tokens = [t.forward_tokens for t in trials]
    return ExamplesSpent(
        scored=sum(t.examples_scored for t in trials),
        forward_tokens=None if None in tokens else sum(tokens),
        dropped=len(dropped),
        saved=sum(full - t.examples_scored for t in dropped) if full is not None else 0,
    )


def running_trials(study: optuna.Study) -> int:
    """Trials in flight, on any driver."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def fail_and_retry(study: optuna.Study, trial: optuna.Trial, error: str, max_retries: int) -> bool:
    """Record the trial as failed with its error; queue its parameters again while retries remain."""
    stored = StoredTrial.running(trial)
    record_error(trial, error)
    study.tell(trial, state=TrialState.FAIL)
    if stored.attempt > max_retries:
        return False
    queue_again(study, stored, attempt=stored.attempt + 1)
    return True


class Ledger:
    """Writes one study's outcomes: its trials on the study, their examples in its folder."""

    def __init__(self, study: optuna.Study, folder: Path, objectives: list[str], screening: Screening | None,
                 max_retries: int) -> None:
        self.study = study
        self.folder = folder
        self.objectives = objectives
        self.screening = screening
        self.max_retries = max_retries

    def record(self, trial: optuna.Trial, result: CandidateResult) -> list[float] | None:
        """Store a worker's result on the trial, and its per-example results in the study folder, and
        return its objective values; a bad candidate (non-finite weights or scores) fails with the
        reason, keeps no examples, returns None, and is not retried: it would fail again."""
        if result.error is None:
            record_scores(trial, result)
        if result.bad is not None:
            record_error(trial, result.bad)
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        write_results(self.folder, trial.number, result.examples)
        if self.screening is not None:  # what later candidates are paired with at screening
            record_subset_scores(trial, self.screening.on_subset(result.examples, self.objectives),
                                 self.screening.standard_errors(result.examples, self.objectives))
        record_cost(trial, result.examples_scored, result.costs.forward_tokens)
        values = [result.scores[o] for o in self.objectives]
        self.study.tell(trial, values)
        return values

    def fail(self, trial: optuna.Trial, reason: str) -> None:
        """Fail the trial with its one-line reason, queued again while its retries last."""
        try:
            fail_and_retry(self.study, trial, reason, self.max_retries)
        except optuna.exceptions.UpdateFinishedTrialError:  # told before recording failed: its state stands
            pass

    def screened(self, trial: optuna.Trial, scores: dict[str, float], verdict: Verdict) -> None:
        """Keep a screened trial's subset scores and the verdict on them."""
        record_screening(trial, scores, verdict)

    def drop(self, trial: optuna.Trial, screened: CandidateResult) -> None:
        """A trial screening dropped: it cost its stages' examples, and the sampler is told it was pruned."""
        self.charge_screening(trial, screened)
        self.study.tell(trial, state=TrialState.PRUNED)

    def charge_screening(self, trial: optuna.Trial, screened: CandidateResult) -> None:
        """What a trial's screening stages cost (a promoted trial whose next stage failed paid them too)."""
        record_cost(trial, screened.examples_scored, screened.costs.forward_tokens)

    def record_side_baseline(self, side_queue: optuna.Study, claim: int, label: str, recipe: MergeRecipe,
                             result: CandidateResult) -> None:
        """Store a side baseline's scores (or why it has none) on the study and close its claim in the queue."""
        error = result.bad
        if not error:
            write_results(self.folder, label, result.examples)
        record_side_baseline(self.study, SideBaseline(label, recipe.to_json(), scores=None if error else result.scores,
                                                      error=error))
        try:
            if error:
                side_queue.tell(claim, state=TrialState.FAIL)
            else:
                side_queue.tell(claim, [result.scores[o] for o in self.objectives])
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # taken for lost meanwhile, and queued
            warnings.warn(f"side baseline '{label}' was taken for lost by a driver while this one could not reach "
                          "the database; it is scored again from the queue", stacklevel=1)
