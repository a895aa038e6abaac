"""Preparing a study to search: everything validated, the study created or joined, its baselines queued.

Nothing is written before the pool, space, suite, engine and resources are checked. A new study is
bound to its pool (fingerprint), objectives and space, so it is never continued against anything
else; baselines the search space expresses are queued as its first trials, the others wait in a
companion queue of their own (recycler/coordination.py).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from transformers import AutoTokenizer

from recycler.baselines import baseline_recipes
from recycler.coordination import Coordination, coordination_for, database_storage
from recycler.engine import engine_class
from recycler.errors import RecyclerError
from recycler.examples import prompts_kept, write_prompts
from recycler.merge import check_merge_budget
from recycler.pool import load_pool
from recycler.recipes import MergeRecipe, layer_count
from recycler.records import (
    queue_baseline,
    queue_side_baseline,
    record_screening_stages,
    record_study_binding,
    screening_stages,
    side_baseline_queue,
    side_baselines,
    study_binding,
)
from recycler.results import TaskExamples
from recycler.screening import Screening, choose_stages
from recycler.space import SearchSpace, load_space
from recycler.spec import PoolSpec
from recycler.study import StudyInfo, bind_folder, storage_for
from recycler.suite import Suite, is_group, load_suite
from recycler.workers import worker_device

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
    coordination: Coordination  # how this driver shares the study with others, by its storage
    folder: Path
    info: StudyInfo
    space: SearchSpace
    side_recipes: dict[str, MergeRecipe]  # baselines the space cannot express, by label
    side_queue: optuna.Study  # those still to score wait there as trials (recycler/coordination.py)
    suite: Suite
    tasks: dict[str, Any]  # the suite's lm-eval tasks, whose aggregations put screened stages together
    screening: Screening | None  # None: every candidate is scored on every example

    def full_scores(self, examples: dict[str, TaskExamples]) -> dict[str, float]:
        """Every task's score from all its examples' values, aggregated as the worker aggregates them."""
        return {spec.task: self.suite.aggregate(self.tasks[spec.task], spec, examples[spec.task].scores)
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
        check_merge_budget(pool, worker_device(spec), spec.resources.memory_budget)
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
    coordination = coordination_for(optuna_storage, folder, spec.resources.heartbeat_seconds)
    study, created = _open_study(optuna_storage, coordination, info, spec)
    baselines = baseline_recipes(pool.names, pool.base is not None)
    if created:  # only the driver that made the study queues its baselines, so each is scored once
        for label, recipe in baselines.items():
            params = space.params_for(recipe)
            if params is not None:
                queue_baseline(study, params, label)
    side = {label: recipe for label, recipe in baselines.items() if space.params_for(recipe) is None}
    side_queue = _open_side_queue(optuna_storage, study, info, side)
    screening = _screening(spec, suite, tasks, texts, study) if spec.search.fidelity is not None else None
    return PreparedStudy(study, optuna_storage, coordination, folder, info, space, side, side_queue, suite, tasks, screening)


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
    """The study's screening; its subsets are drawn once and kept on the study, so every candidate,
    before and after a resume, is screened on the same examples."""
    fidelity = spec.search.fidelity
    stages, drawn = screening_stages(study), choose_stages(texts, fidelity.stages, fidelity.seed)
    if stages is None:
        stages = drawn
        record_screening_stages(study, stages)
    elif len(stages) != len(fidelity.stages):
        raise RecyclerError(f"search.fidelity.screen_fraction: this study screens in {len(stages)} stage(s), not "
                            f"{len(fidelity.stages)}; its subsets are fixed for the study: keep the schedule or start a new study")
    elif stages != drawn:
        raise RecyclerError("search.fidelity: this study's screening subsets were drawn with another screen_fraction or "
                            "seed; they are fixed for the study: keep those or start a new study")
    mean_tasks = frozenset(t.task for t in suite.tasks if suite.mean_aggregated(tasks[t.task], t))
    return Screening(stages, {task: len(examples) for task, examples in texts.items()}, fidelity.confidence, mean_tasks,
                     fidelity.member_credit, fidelity.history_after)


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


def _open_study(storage: optuna.storages.BaseStorage, coordination: Coordination, info: StudyInfo,
                spec: PoolSpec) -> tuple[optuna.Study, bool]:
    """Create or load the study, and say whether this driver created it. The sampler's seed moves on
    with the trials already run, so a resumed search does not propose the same points again; in a
    database, each driver's is drawn afresh, so drivers running together do not propose the same ones."""
    try:
        trials = len(optuna.load_study(study_name=info.name, storage=storage).trials)
    except KeyError:
        trials = 0
    seed = coordination.sampler_seed(spec.search.seed + trials)
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
