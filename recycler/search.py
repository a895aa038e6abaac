"""The search: an Optuna multi-objective study driven by ask-and-tell over Ray worker actors.

Baselines (each checkpoint alone, the uniform average, the literature's merge methods at their
defaults) are scored first, so every front is read against them: those the search space can
express are its first trials, the others are recorded on the study beside the trials. As many
trials are in flight as there are workers; a new one is asked for the moment a worker frees up. Every finished trial is in Optuna storage at once, so a killed
search resumes where it stopped and never re-runs a finished trial.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from recycler.baselines import baseline_recipes
from recycler.errors import RecyclerError, format_bytes, one_line
from recycler.front import BASELINE_ATTR, hypervolume, reference_point
from recycler.merge import MemoryNeeds, keep_resident
from recycler.pool import Pool, load_pool
from recycler.recipes import MergeRecipe, layer_count
from recycler.space import SearchSpace, load_space
from recycler.spec import PoolSpec
from recycler.study import StudyInfo, read_info, storage_for, write_info
from recycler.suite import load_suite

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


def _objectives(spec: PoolSpec) -> tuple[list[str], list[str], list[str]]:
    """Objective names, their directions (from lm-eval's higher_is_better), and held-out tasks."""
    suite = load_suite(spec.suite)
    tasks = suite.build_tasks()
    objectives = list(spec.objectives or suite.held_in)
    for name in objectives:
        if name not in suite.held_in:
            raise RecyclerError(f"objectives: '{name}' is not a held-in task of suite '{suite.spec.name}' ({', '.join(suite.held_in)})")
    metric = {t.task: t.metric.split(",")[0] for t in suite.tasks}
    directions = ["maximize" if tasks[o].higher_is_better().get(metric[o], True) else "minimize" for o in objectives]
    return objectives, directions, suite.held_out


def prepare_study(spec: PoolSpec, folder: Path, storage: str | None = None) -> tuple[optuna.Study, StudyInfo, SearchSpace]:
    """Validate everything, then create the study folder or check that it belongs to this pool."""
    pool = load_pool(spec)
    space = load_space(spec.search.space, pool.names, layers=layer_count(pool.tensor_names))
    objectives, directions, held_out = _objectives(spec)
    make_sampler(spec.search.sampler, spec.search.seed)
    if spec.resources.memory_budget is not None:  # `auto` is measured on each worker's machine
        keep_resident(pool, _worker_device(spec), spec.resources.memory_budget)
    pool.check_finite()
    info = StudyInfo(
        name=spec.name,
        fingerprint=pool.fingerprint(),
        spec=spec.model_dump(mode="json"),
        objectives=objectives,
        directions=directions,
        held_out=held_out,
        storage=storage,
    )
    if (folder / "study.json").is_file():
        existing = read_info(folder)
        if existing.fingerprint != info.fingerprint:
            raise RecyclerError(f"{folder}: study belongs to another pool (fingerprint {existing.fingerprint[:12]}, this pool {info.fingerprint[:12]})")
        if existing.objectives != objectives or existing.spec["search"]["space"] != spec.search.space:
            raise RecyclerError(f"{folder}: study searched other objectives or another space; use a new study folder")
        info = existing
    else:
        write_info(folder, info)
    finished = 0
    try:
        existing_study = optuna.load_study(study_name=info.name, storage=storage_for(folder, info))
        finished = len(existing_study.trials)
    except KeyError:
        pass
    study = optuna.create_study(
        study_name=info.name,
        storage=storage_for(folder, info),
        directions=info.directions,
        sampler=make_sampler(spec.search.sampler, spec.search.seed + finished),
        load_if_exists=True,
    )
    if study.metric_names is None:  # tools such as optuna-dashboard label the objectives by them
        with warnings.catch_warnings():  # experimental in Optuna since 3.2, and stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(info.objectives)
    if not study.trials:
        for label, recipe in baseline_recipes(pool.names, pool.base is not None).items():
            params = space.params_for(recipe)
            if params is not None:
                study.enqueue_trial(params, user_attrs={"baseline": label})
    return study, info, space


def pending_baselines(study: optuna.Study, space: SearchSpace, pool: Pool) -> dict[str, MergeRecipe]:
    """Baselines the space cannot express and the study has not recorded yet."""
    return {
        label: recipe
        for label, recipe in baseline_recipes(pool.names, pool.base is not None).items()
        if space.params_for(recipe) is None and BASELINE_ATTR.format(label) not in study.user_attrs
    }


def requeue_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed search: mark them failed and queue their parameters again.

    A trial killed before all its parameters were drawn (its recipe is recorded once they are)
    had nothing evaluated; it is failed only.
    """
    interrupted = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in interrupted:
        study.tell(trial.number, state=TrialState.FAIL)
        if not {"recipe", "weights"} & set(trial.user_attrs):  # "weights" alone: a study from before recipes were recorded
            continue
        kept = {k: v for k, v in trial.user_attrs.items() if k in ("baseline", "attempt")}
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, **kept}, skip_if_exists=False)
    return len(interrupted)


def finished_trials(study: optuna.Study) -> int:
    """Trials that count against the budget: completed, or failed for good with an error and not
    queued again. Trials interrupted by a killed search carry no error and do not count."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return sum(
        1
        for t in trials
        if t.state == TrialState.COMPLETE
        or (t.state == TrialState.FAIL and "error" in t.user_attrs and t.number not in retried)
    )


def fail_and_retry(study: optuna.Study, trial: optuna.Trial, error: str, max_retries: int) -> bool:
    """Record the trial as failed with its error; queue its parameters again while retries remain."""
    attempt = int(trial.user_attrs.get("attempt", 1))
    trial.set_user_attr("error", error)
    study.tell(trial, state=TrialState.FAIL)
    if attempt > max_retries:
        return False
    attrs = {"retry_of": trial.number, "attempt": attempt + 1}
    if "baseline" in trial.user_attrs:
        attrs["baseline"] = trial.user_attrs["baseline"]
    study.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)
    return True


def _describe(error: Exception) -> str:
    import ray

    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause
        return f"{type(cause).__name__}: {one_line(cause, 400)}"
    return f"worker died: {one_line(error, 400)}"


@dataclass
class _InFlight:
    worker: Any
    trial: optuna.Trial | None = None
    baseline: str | None = None
    recipe: MergeRecipe | None = None


def _non_finite(scores: dict[str, Any]) -> str | None:
    """The error for the first score that is not a finite number, if any."""
    bad = [task for task, value in scores.items() if not isinstance(value, (int, float)) or not math.isfinite(value)]
    return f"non-finite score on task '{bad[0]}'" if bad else None


def record_baseline(study: optuna.Study, label: str, recipe: MergeRecipe, result: dict[str, Any]) -> None:
    """Store a baseline scored beside the trials on the study: its recipe and scores, or its error."""
    entry: dict[str, Any] = {"recipe": recipe.to_json()}
    error = result.get("error") or _non_finite(result["scores"])
    if error:
        entry["error"] = error
    else:
        entry["scores"] = result["scores"]
    study.set_user_attr(BASELINE_ATTR.format(label), entry)


def record_result(study: optuna.Study, info: StudyInfo, trial: optuna.Trial, result: dict[str, Any]) -> bool:
    """Store a worker's result on the trial; a bad candidate (non-finite weights or scores) fails
    with the reason and is not retried: it would fail again."""
    if "error" in result:
        trial.set_user_attr("error", result["error"])
        study.tell(trial, state=TrialState.FAIL)
        return False
    scores = result["scores"]
    trial.set_user_attr("scores", scores)
    for key in ("merge_seconds", "forward_seconds", "trial_seconds"):
        trial.set_user_attr(key, result[key])
    error = _non_finite(scores)
    if error:
        trial.set_user_attr("error", error)
        study.tell(trial, state=TrialState.FAIL)
        return False
    study.tell(trial, [scores[o] for o in info.objectives])
    return True


def connect_ray(address: str | None) -> None:
    """Join the Ray cluster at `address` (a local one when None) unless this process already has;
    without the dashboard, which costs about 1 GB, and with Ray's logs kept off the user's terminal."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)


def _start_workers(spec: PoolSpec, address: str | None, count: int | None = None, progress: bool = False) -> list[Any]:
    """Start worker actors and wait until each holds its pool and model; a worker that dies while
    starting ends the search with one line saying why and what it needed."""
    import ray
    from tqdm import tqdm

    from recycler.workers import MergeWorker

    connect_ray(address)
    workers = spec.resources.workers
    gpus = spec.resources.gpus_per_worker
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
    actor = ray.remote(MergeWorker).options(num_cpus=cpus, num_gpus=gpus, max_concurrency=1)
    handles = [actor.remote(spec, _worker_device(spec).type, cpus) for _ in range(count or workers)]
    waiting = [h.ready.remote() for h in handles]
    with tqdm(total=len(handles), desc="starting workers", unit="worker", delay=2.0, disable=not progress,
              dynamic_ncols=True) as bar:
        while waiting:
            (ready,), waiting = ray.wait(waiting, num_returns=1)
            try:
                ray.get(ready)
            except ray.exceptions.RayError as error:
                for handle in handles:
                    ray.kill(handle)
                raise RecyclerError(_startup_failure(error, spec, len(handles))) from None
            bar.update(1)
    return handles


def _startup_failure(error: Exception, spec: PoolSpec, count: int) -> str:
    """One line for a worker that died while starting: what ran out, what a worker needs, what to change."""
    import ray

    if isinstance(error, ray.exceptions.RayActorError) and error.actor_init_failed:
        raised = str(error).strip().splitlines()[-1]  # the exception the worker's constructor raised
        return "a worker failed while starting: " + re.sub(r"^([\w.]*\.)?RecyclerError: ", "", raised)
    needs = MemoryNeeds.of(load_pool(spec), _worker_device(spec))
    holds = (
        f"a worker needs {format_bytes(needs.streamed)} with the pool streamed from the page cache (one model and "
        f"scratch), {format_bytes(needs.resident)} with it stacked, and {count} worker(s) started"
    )
    advice = "lower resources.workers or resources.memory_per_worker, or use a machine with more memory"
    if isinstance(error, ray.exceptions.OutOfMemoryError):
        node = re.search(r"was ([\d.]+\s*GB) used / ([\d.]+\s*GB) limit", str(error))
        seen = f" (the node had {node[1]} of {node[2]} in use)" if node else ""
        return f"a worker ran out of memory while starting and Ray killed it{seen}: {holds}; {advice}"
    return f"a worker died while starting ({_describe(error)[:200]}): {holds}; if memory ran out, {advice}"


def _worker_device(spec: PoolSpec) -> torch.device:
    return torch.device("cuda" if spec.resources.gpus_per_worker > 0 else "cpu")


def run_search(
    spec: PoolSpec,
    folder: str | Path,
    *,
    storage: str | None = None,
    address: str | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> optuna.Study:
    """Run (or continue) the study until spec.search.trials trials have finished.

    should_stop, checked each time a worker frees up, ends the search early once the trials in flight finish.
    """
    import ray
    from tqdm import tqdm

    folder = Path(folder)
    study, info, space = prepare_study(spec, folder, storage)
    requeue_interrupted(study)
    budget = spec.search.trials
    baselines = pending_baselines(study, space, load_pool(spec))
    if finished_trials(study) >= budget and not baselines:
        return study
    workers = _start_workers(spec, address, progress=progress)
    idle = list(workers)
    in_flight: dict[Any, _InFlight] = {}
    deaths: dict[str, int] = {}  # side baselines whose worker died, scored again like a failed trial
    bar = tqdm(total=budget, initial=finished_trials(study), desc="trials", disable=not progress, dynamic_ncols=True)
    try:
        stopping = False
        while True:
            stopping = stopping or bool(should_stop and should_stop())
            while idle and baselines and not stopping:
                label, recipe = baselines.popitem()
                worker = idle.pop()
                in_flight[worker.evaluate.remote(recipe.to_json())] = _InFlight(worker, baseline=label, recipe=recipe)
            while idle and finished_trials(study) + _trials_in(in_flight) < budget and not stopping:
                trial = study.ask()
                recipe = space.suggest(trial)
                trial.set_user_attr("recipe", recipe.to_json())
                trial.set_user_attr("weights", recipe.checkpoint_weights())
                worker = idle.pop()
                in_flight[worker.evaluate.remote(recipe.to_json())] = _InFlight(worker, trial=trial)
            if not in_flight:
                break
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            job = in_flight.pop(ref)
            try:
                result = ray.get(ref)
                idle.append(job.worker)
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as error:
                result = {"error": _describe(error)}
                workers.remove(job.worker)
                ray.kill(job.worker)
                fresh = _start_workers(spec, address, count=1, progress=progress)
                workers += fresh
                idle += fresh
                if job.trial is not None:
                    fail_and_retry(study, job.trial, result["error"], spec.search.max_retries)
                    bar.update(1)
                    continue
                deaths[job.baseline] = deaths.get(job.baseline, 0) + 1
                if deaths[job.baseline] <= spec.search.max_retries:
                    baselines[job.baseline] = job.recipe
                    continue
            if job.trial is None:
                record_baseline(study, job.baseline, job.recipe, result)
                continue
            record_result(study, info, job.trial, result)
            bar.update(1)
            bar.set_postfix(_progress(study, info))
    finally:
        bar.close()
        for ref, job in in_flight.items():
            ray.cancel(ref, force=True)
        for worker in workers:
            ray.kill(worker)
    return study


def _trials_in(in_flight: dict[Any, _InFlight]) -> int:
    return sum(job.trial is not None for job in in_flight.values())


def _progress(study: optuna.Study, info: StudyInfo) -> dict[str, str]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reference = reference_point(study, info)
    front = study.best_trials
    hv = hypervolume([t.values for t in complete], info.directions, reference) if reference is not None else 0.0
    return {"front": str(len(front)), "hv": f"{hv:.4g}"}
