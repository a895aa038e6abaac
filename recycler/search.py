"""The search: an Optuna multi-objective study driven by ask-and-tell over Ray worker actors.

Baselines (each checkpoint alone, the uniform average, the literature's merge methods at their
defaults) are scored first, so every front is read against them: those the search space can
express are its first trials, the others are recorded on the study beside the trials. As many
trials are in flight as there are workers; a new one is asked for the moment a worker frees up.
Every finished trial is in Optuna storage at once, so a killed search resumes where it stopped and
never re-runs a finished trial. Each scored candidate's per-example results go to the study folder
(recycler/examples.py) before the candidate is recorded (recycler/ledger.py, the only writer of
outcomes), so every completed trial has them. With
the study in a database, several drivers (on several machines) can run it together
(recycler/coordination.py): the budget counts every driver's trials.
"""

from __future__ import annotations

import json
import random
import re
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState
from transformers import AutoTokenizer

from recycler.baselines import baseline_recipes
from recycler.cluster import RayWorkers
from recycler.coordination import (
    Heartbeat,
    ask,
    claim_side_baseline,
    database_storage,
    fail_lost_trials,
    folder_lock,
    shares_storage,
)
from recycler.engine import engine_class
from recycler.errors import RecyclerError, one_line
from recycler.examples import prompts_kept, write_prompts
from recycler.front import reference_point
from recycler.ledger import Ledger, bad_candidate, finished_trials, requeue_interrupted, running_trials
from recycler.merge import keep_resident
from recycler.pareto import FrontTracker
from recycler.pool import load_pool
from recycler.recipes import MergeRecipe, layer_count
from recycler.records import (
    TIMING,
    StoredTrial,
    queue_baseline,
    queue_side_baseline,
    record_candidate,
    record_screening_subset,
    record_study_binding,
    screening_subset,
    side_baseline_queue,
    side_baselines,
    stored_trials,
    study_binding,
)
from recycler.screening import FrontMember, Screening, choose_subset, merge_stages
from recycler.space import SearchSpace, load_space
from recycler.spec import PoolSpec
from recycler.study import StudyInfo, bind_folder, storage_for
from recycler.suite import Suite, is_group, load_suite
from recycler.worker_pools import Finished, SerialWorkers, WorkerPool, worker_device

DEFAULT_SAMPLER = "TPESampler"


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """'default' or the class name of any Optuna sampler, seeded."""
    class_name = DEFAULT_SAMPLER if name == "default" else name
    cls = getattr(optuna.samplers, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, optuna.samplers.BaseSampler):
        raise RecyclerError(f"search.sampler: unknown Optuna sampler '{name}'")
    try:
        return cls(seed=seed)
    except TypeError:
        return cls()


def _objectives(spec: PoolSpec, suite: Suite, tasks: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """Objective names, their directions (from lm-eval's higher_is_better), and held-out tasks."""
    objectives = list(spec.objectives or suite.held_in)
    for name in objectives:
        if name not in suite.held_in:
            raise RecyclerError(f"objectives: '{name}' is not a held-in task of suite '{suite.spec.name}' ({', '.join(suite.held_in)})")
    held_in = {t.task: t for t in suite.spec.held_in}
    directions = ["maximize" if suite.higher_is_better(tasks[o], held_in[o]) else "minimize" for o in objectives]
    return objectives, directions, suite.held_out


@dataclass(frozen=True)
class PreparedStudy:
    """A study ready to run: its storage and folder, what it searches, and the queue of baselines
    it scores beside the trials."""

    study: optuna.Study
    storage: optuna.storages.BaseStorage
    folder: Path
    info: StudyInfo
    space: SearchSpace
    side_recipes: dict[str, MergeRecipe]  # baselines the space cannot express, by label
    side_queue: optuna.Study  # those still to score wait there as trials (recycler/coordination.py)
    suite: Suite
    tasks: dict[str, Any]  # the suite's lm-eval tasks, whose aggregations put screened stages together
    screening: Screening | None  # None: every candidate is scored on every example

    def full_scores(self, examples: dict[str, Any]) -> dict[str, float]:
        """Every task's score from all its examples' values, aggregated as the worker aggregates them."""
        return {spec.task: self.suite.aggregate(self.tasks[spec.task], spec, examples[spec.task]["scores"])
                for spec in self.suite.tasks}


def prepare_study(spec: PoolSpec, folder: Path, storage: str | None = None) -> PreparedStudy:
    """Validate everything, then create the study folder or check that it belongs to this pool; a
    study folder without the suite's prompts (new, or from before they were kept) gets them."""
    pool = load_pool(spec)
    space = load_space(spec.search.space, pool.names, layers=layer_count(pool.tensor_names))
    suite = load_suite(spec.suite)
    suite.check_tokenizer(AutoTokenizer.from_pretrained(str(pool.reference.path)), pool.reference.name)
    tasks = suite.build_tasks()
    objectives, directions, held_out = _objectives(spec, suite, tasks)
    if spec.search.fidelity is not None:
        _check_screenable(suite, tasks)
    make_sampler(spec.search.sampler, spec.search.seed)
    if spec.resources.memory_budget is not None:  # `auto` is measured on each worker's machine
        keep_resident(pool, worker_device(spec), spec.resources.memory_budget)
    engine_class(spec.resources.engine).check(pool, spec.resources, worker_device(spec))
    pool.check_finite()
    candidate = StudyInfo(
        name=spec.name,
        fingerprint=pool.fingerprint(),
        spec=spec.model_dump(mode="json"),
        objectives=objectives,
        directions=directions,
        held_out=held_out,
        storage=storage,
    )
    if storage is not None:  # a shared database: the name must not reach another pool's study
        _check_shared_study(candidate)
    info = bind_folder(folder, candidate)
    texts = suite.example_texts(tasks)
    if not prompts_kept(folder):
        write_prompts(folder, texts)
    optuna_storage = storage_for(folder, info, spec.resources.heartbeat_seconds)
    study, created = _open_study(optuna_storage, info, spec)
    baselines = baseline_recipes(pool.names, pool.base is not None)
    if created:  # only the driver that made the study queues its baselines, so each is scored once
        for label, recipe in baselines.items():
            params = space.params_for(recipe)
            if params is not None:
                queue_baseline(study, params, label)
    side = {label: recipe for label, recipe in baselines.items() if space.params_for(recipe) is None}
    side_queue = _open_side_queue(optuna_storage, study, info, side)
    screening = _screening(spec, suite, tasks, texts, study) if spec.search.fidelity is not None else None
    return PreparedStudy(study, optuna_storage, folder, info, space, side, side_queue, suite, tasks, screening)


def _check_screenable(suite: Suite, tasks: dict[str, Any]) -> None:
    """Screening puts a score together from per-example numbers; a corpus metric has none, and a
    group's are its members' (stages of a group are not put together)."""
    for task in suite.tasks:
        if is_group(tasks[task.task]):
            raise RecyclerError(f"search.fidelity: task '{task.task}' is an lm-eval group; screening puts a score "
                                "together from one task's examples, not from a group's members; remove fidelity or the task")
        if not suite.aggregated_per_example(tasks[task.task], task):
            raise RecyclerError(f"search.fidelity: task '{task.task}' ({task.metric}) is a corpus metric, not one number "
                                "per example, so screened stages cannot be put together; remove fidelity or the task")


def _screening(spec: PoolSpec, suite: Suite, tasks: dict[str, Any], texts: dict[str, list[Any]], study: optuna.Study) -> Screening:
    """The study's screening; its subset is drawn once and kept on the study, so every candidate,
    before and after a resume, is screened on the same examples."""
    fidelity = spec.search.fidelity
    subset = screening_subset(study)
    if subset is None:
        subset = choose_subset(texts, fidelity.screen_fraction, fidelity.seed)
        record_screening_subset(study, subset)
    mean_tasks = frozenset(t.task for t in suite.tasks if suite.mean_aggregated(tasks[t.task], t))
    return Screening(subset, {task: len(examples) for task, examples in texts.items()}, fidelity.confidence, mean_tasks)


def _check_shared_study(info: StudyInfo) -> None:
    """Refuse a study name that, in this database, belongs to a study of another pool, objectives or
    space (a team's database holds many people's studies): joining it would mix their trials."""
    try:
        existing = optuna.load_study(study_name=info.name, storage=database_storage(info.storage, None))
    except KeyError:
        return
    bound = study_binding(existing)
    if bound is None and existing.trials:
        raise RecyclerError(f"--storage: the database already holds a study '{info.name}' that recycler did not make "
                            "for this pool; give this study another name (spec `name`)")
    if bound is not None and bound != info.binding:
        what = "another pool" if bound["fingerprint"] != info.fingerprint else "other objectives or another space"
        raise RecyclerError(f"--storage: the study '{info.name}' in this database searches {what} (fingerprint "
                            f"{bound['fingerprint'][:12]}, this pool {info.fingerprint[:12]}); give this study another "
                            "name (spec `name`)")


def _create_or_load(storage: optuna.storages.BaseStorage, name: str, info: StudyInfo,
                    sampler: optuna.samplers.BaseSampler | None = None) -> tuple[optuna.Study, bool]:
    """The study of that name, and whether this driver made it: of several drivers starting at
    once, exactly one does (the storage refuses a second study of one name)."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=info.directions, sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler), False
    with warnings.catch_warnings():  # experimental in Optuna since 3.2, and stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(info.objectives)  # tools such as optuna-dashboard label the objectives by them
    return study, True


def _open_study(storage: optuna.storages.BaseStorage, info: StudyInfo, spec: PoolSpec) -> tuple[optuna.Study, bool]:
    """Create or load the study, and say whether this driver created it. The sampler's seed moves on
    with the trials already run, so a resumed search does not propose the same points again; in a
    database, each driver's is drawn afresh, so drivers running together do not propose the same ones."""
    try:
        trials = len(optuna.load_study(study_name=info.name, storage=storage).trials)
    except KeyError:
        trials = 0
    seed = spec.search.seed + trials
    if shares_storage(storage):
        seed += random.SystemRandom().randrange(1 << 30)
    study, created = _create_or_load(storage, info.name, info, make_sampler(spec.search.sampler, seed))
    if study_binding(study) is None:
        record_study_binding(study, info.binding, info.description)
    return study, created


def _open_side_queue(storage: optuna.storages.BaseStorage, study: optuna.Study, info: StudyInfo,
                     side: dict[str, MergeRecipe]) -> optuna.Study:
    """The companion study whose waiting trials are the side baselines still to score; whoever makes
    it fills it with those not scored yet (all, for a new study)."""
    queue, created = _create_or_load(storage, side_baseline_queue(info.name), info)
    if created:
        scored = side_baselines(study)
        for label in side:
            if label not in scored:
                queue_side_baseline(queue, label)
    return queue


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

    def failed(self, job: _Job, reason: str, died: bool) -> None:
        where = f"trial {job.trial.number}" if job.trial is not None else f"baseline '{job.label}'"
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


@dataclass(frozen=True)
class _Job:
    """What a worker is scoring: a trial of the study, or a baseline scored beside them."""

    recipe: MergeRecipe
    trial: optuna.Trial | None = None
    label: str | None = None
    claim: int | None = None  # the side baseline's trial number in the study's queue of them
    stage: str = "all"  # "screen": the screening subset; "rest": the examples screening left
    screened: dict[str, Any] | None = None  # the screening stage's result, for "rest"


class _Progress:
    """The trials bar, with the front's size and hypervolume, kept up one trial at a time."""

    def __init__(self, study: optuna.Study, info: StudyInfo, budget: int, enabled: bool, screening: Screening | None) -> None:
        from tqdm import tqdm

        self.study, self.info = study, info
        self.bar = tqdm(total=budget, initial=finished_trials(study), desc="trials", disable=not enabled,
                        dynamic_ncols=True)
        self.tracker: FrontTracker | None = None
        self.full_cost = screening.examples if screening is not None else None
        self.scored = sum(t.examples_scored or 0 for t in stored_trials(study))
        self.saved = sum(self.full_cost - t.examples_scored for t in stored_trials(study) if t.screened_out) if screening else 0

    def trial_finished(self, values: list[float] | None, examples_scored: int = 0) -> None:
        """One more trial of this driver counts against the budget: with its objective values if it
        completed, and the examples it scored. The bar counts every driver's trials."""
        self.bar.n = finished_trials(self.study)
        self.scored += examples_scored
        if self.full_cost is not None and values is None and examples_scored:
            self.saved += self.full_cost - examples_scored
        if values is not None:
            self._track(values)
        postfix = {}
        if self.tracker is not None:
            postfix = {"front": len(self.tracker.front), "hv": f"{self.tracker.hypervolume:.4g}"}
        if self.full_cost is not None:
            postfix["saved"] = f"{self.saved / max(1, self.saved + self.scored):.0%} of examples"
        self.bar.set_postfix(postfix)

    def _track(self, values: list[float]) -> None:
        """Add the newest trial; measure every trial again only while the baselines that bound the
        hypervolume are still coming in and move its reference point."""
        reference = reference_point(self.study, self.info)
        if reference is None:
            return
        if self.tracker is None or not (self.tracker.reference == reference).all():
            self.tracker = FrontTracker(self.info.directions, reference)
            for trial in stored_trials(self.study, complete_only=True):
                self.tracker.add(trial.values)
        else:
            self.tracker.add(values)

    def close(self) -> None:
        self.bar.close()


@dataclass
class _Loop:
    """One driver's run of the search: keeps its workers busy with a trial or a baseline, hands what
    comes back to the ledger (which retries what failed), beats for what it has in flight, and
    requeues the trials of drivers that stopped beating."""

    prepared: PreparedStudy
    spec: PoolSpec
    workers: WorkerPool[_Job]
    ledger: Ledger
    progress: _Progress
    heartbeat: Heartbeat
    should_stop: Callable[[], bool]
    failures: _FailureStreak
    lost_baselines: dict[str, int] = field(default_factory=dict)  # side baselines whose worker failed, by label
    finishing: list[_Job] = field(default_factory=list)  # screened trials promoted, waiting for a worker
    rescoring: list[_Job] = field(default_factory=list)  # side baselines whose worker died, waiting for another
    stopping: bool = False
    checked_lost: float = 0.0  # when the study was last checked for trials of a driver that stopped beating

    def run(self) -> None:
        while True:
            self._requeue_lost()
            self.stopping = self.stopping or self.should_stop()
            self._finish_started()  # even when stopping: in flight, not new work
            if not self.stopping:
                self._fill_idle_workers()
            if not self.workers.jobs() and self._done():
                return
            finished = self.workers.next_finished(timeout=self.spec.resources.heartbeat_seconds)
            if finished is not None:
                self._record(finished)

    def _done(self) -> bool:
        """With nothing in flight here: whether this driver is through. It waits while the budget is
        not met and other drivers' trials are in flight, since one that fails is queued again."""
        if self.finishing or self.rescoring:  # waiting for a worker (a replacement still starting)
            return False
        return self.stopping or finished_trials(self.prepared.study) >= self.spec.search.trials

    def _requeue_lost(self) -> None:
        if time.monotonic() - self.checked_lost < self.spec.resources.heartbeat_seconds:
            return
        self.checked_lost = time.monotonic()
        if shares_storage(self.prepared.storage):
            fail_lost_trials(self.prepared.study, self.prepared.storage)
            fail_lost_trials(self.prepared.side_queue, self.prepared.storage)

    def _finish_started(self) -> None:
        """Hand idle workers the work already begun: promoted trials, and side baselines whose worker died."""
        while self.workers.idle and self.finishing:
            job = self.finishing.pop(0)
            self.workers.submit(job.recipe, job, examples=self.prepared.screening.rest)
        while self.workers.idle and self.rescoring:
            job = self.rescoring.pop(0)
            self.workers.submit(job.recipe, job)

    def _fill_idle_workers(self) -> None:
        prepared = self.prepared
        study, screening = prepared.study, prepared.screening
        while self.workers.idle and (claim := claim_side_baseline(prepared.storage, prepared.side_queue)) is not None:
            number, label = claim
            self.heartbeat.add(prepared.side_queue, number)
            recipe = prepared.side_recipes[label]
            self.workers.submit(recipe, _Job(recipe, label=label, claim=number))
        while self.workers.idle and finished_trials(study) + running_trials(study) < self.spec.search.trials:
            trial = ask(study)
            self.heartbeat.add(study, trial.number)
            recipe = prepared.space.suggest(trial)
            record_candidate(trial, recipe)
            if screening is not None and StoredTrial.running(trial).baseline is None:  # baselines: always in full
                self.workers.submit(recipe, _Job(recipe, trial=trial, stage="screen"), examples=screening.subset)
            else:
                self.workers.submit(recipe, _Job(recipe, trial=trial))

    def _screened(self, job: _Job, result: dict[str, Any]) -> bool:
        """Finish a screened trial if it can still reach the front of fully evaluated trials, else
        drop it (told to the sampler as pruned) with its subset's scores; True if it goes on."""
        prepared, study = self.prepared, self.prepared.study
        if bad_candidate(result):
            self.progress.trial_finished(self.ledger.record(job.trial, result))
            return False
        info, screening = prepared.info, prepared.screening
        front = [FrontMember(t.number, t.values, t.subset_scores) for t in map(StoredTrial.of, study.best_trials)
                 if t.subset_scores is not None]  # (older trials did not keep theirs: never compared)
        verdict = screening.verdict(screening.on_subset(result["examples"], info.objectives), front, info.objectives,
                                    info.directions)
        self.ledger.screened(job.trial, result["scores"], verdict)
        if verdict.finish:
            self.finishing.append(replace(job, stage="rest", screened=result))
            return True
        self.ledger.drop(job.trial, result["forward_tokens"])
        self.progress.trial_finished(None, prepared.screening.screened_examples)
        return False

    def _finished(self, job: _Job, result: dict[str, Any]) -> dict[str, Any]:
        """A promoted trial's full result: both stages' examples, aggregated as full evaluation does."""
        if "error" in result:
            return result
        examples = merge_stages(job.screened["examples"], result["examples"])
        costs = {key: job.screened[key] + result[key]
                 for key in (*TIMING, "forward_tokens")}
        return {"scores": self.prepared.full_scores(examples), "examples": examples, **costs}

    def _record(self, finished: Finished[_Job]) -> None:
        if finished.job.trial is None:
            self._record_side_baseline(finished)
            return
        try:
            still_running = self._record_trial(finished)
        except optuna.exceptions.UpdateFinishedTrialError:  # taken for lost while the database was away
            warnings.warn(f"trial {finished.job.trial.number} was taken for lost by a driver while this one could not "
                          "reach the database; its result is dropped and its retry scores it again", stacklevel=1)
            still_running = False
        except (RecyclerError, *_LOST_CONNECTION):
            raise
        except Exception as error:  # a result this driver cannot record fails its trial, not the search
            still_running = False
            self._fail(finished.job, f"recording its result failed: {type(error).__name__}: {one_line(error, 300)}", died=False)
        if not still_running:
            self.heartbeat.remove(self.prepared.study, finished.job.trial.number)

    def _record_trial(self, finished: Finished[_Job]) -> bool:
        """Store a trial's outcome; True if it goes on to another stage."""
        job, result = finished.job, finished.result
        if finished.failed:
            if job.stage == "rest":  # its screening examples were scored; those of the failed stage are unknown
                self.ledger.charge_screening(job.trial, job.screened["forward_tokens"])
            self._fail(job, result["error"], died=finished.died)
            return False
        if job.stage == "screen":
            still_running = self._screened(job, result)
            self.failures.succeeded()
            return still_running
        result = self._finished(job, result) if job.stage == "rest" else result
        values = self.ledger.record(job.trial, result)
        self.progress.trial_finished(values, self.prepared.screening.examples if self.prepared.screening else 0)
        self.failures.succeeded()
        return False

    def _fail(self, job: _Job, reason: str, died: bool) -> None:
        """Fail the trial with its one-line reason, queue it again while its retries last, and end the
        search once failures repeat (_FailureStreak)."""
        self.ledger.fail(job.trial, reason)
        self.progress.trial_finished(None)
        self.failures.failed(job, reason, died)

    def _record_side_baseline(self, finished: Finished[_Job]) -> None:
        """Store a side baseline's scores on the study and close its claim; a lost worker's baseline
        is scored again by this driver while retries remain."""
        job, result, prepared = finished.job, finished.result, self.prepared
        if finished.failed:
            self.failures.failed(job, result["error"], finished.died)
            self.lost_baselines[job.label] = self.lost_baselines.get(job.label, 0) + 1
            if self.lost_baselines[job.label] <= self.spec.search.max_retries:  # as a failed trial would be
                self.rescoring.append(job)
                return
        else:
            self.failures.succeeded()
        self.ledger.record_side_baseline(prepared.side_queue, job.claim, job.label, job.recipe, result)
        self.heartbeat.remove(prepared.side_queue, job.claim)


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
    with folder_lock(folder) if not shares_storage(prepared.storage) else nullcontext():
        requeue_interrupted((prepared.study, prepared.side_queue), prepared.storage)
        if finished_trials(prepared.study) >= spec.search.trials and not _side_baselines_waiting(prepared):
            return prepared.study
        workers: WorkerPool[_Job] = SerialWorkers(spec) if in_process else RayWorkers(spec, address, progress=progress)
        heartbeat = Heartbeat(prepared.storage, spec.resources.heartbeat_seconds)
        bar = _Progress(prepared.study, prepared.info, spec.search.trials, progress, prepared.screening)
        try:
            failures = _FailureStreak(max(3, 2 * spec.resources.workers, spec.search.max_retries + 2))
            ledger = Ledger(prepared.study, folder, prepared.info.objectives, prepared.screening, spec.search.max_retries)
            _Loop(prepared, spec, workers, ledger, bar, heartbeat, should_stop, failures).run()
        finally:
            bar.close()
            heartbeat.close()
            workers.close()
    return prepared.study


def _side_baselines_waiting(prepared: PreparedStudy) -> bool:
    return bool(prepared.side_queue.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
