"""What a study stores, in one schema: the search writes it, the front, exports and the service read it.

Optuna keeps recycler's facts as user attributes, free-form JSON by string key. Every key is named
here and nowhere else; the rest of the package reads a trial as a `StoredTrial`, a baseline scored
beside the trials as a `SideBaseline`, and a row of the front as a `FrontEntry` (with, when asked,
its example answers beside a baseline's, an `ExampleComparison`). Per-example results are files in
the study folder, not attributes (recycler/examples.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, NotRequired

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import Field
from typing_extensions import TypedDict

from recycler.recipes import LinearRecipe, MergeRecipe
from recycler.results import TIMING, CandidateResult

if TYPE_CHECKING:
    from recycler.screening import Verdict

# Keys of trial user attributes.
_RECIPE = "recipe"  # the candidate's recipe as JSON, recorded once its parameters are drawn
_WEIGHTS = "weights"  # each checkpoint's weight (readable in optuna-dashboard; the recipe alone in older studies)
_RELATIVE = "relative"  # older studies: linear weights over task vectors
_SCORES = "scores"  # every task's score, held-in and held-out
_BASELINE = "baseline"  # the label of a baseline the search space expresses
_RETRY_OF = "retry_of"  # the trial this one repeats
_ATTEMPT = "attempt"  # 1 for a first try
_ERROR = "error"  # why the trial failed for good
# and each of results.TIMING: what the worker timed, per trial
_EXAMPLES_SCORED = "examples_scored"  # the trial's cost: examples run through the model, all stages
_FORWARD_TOKENS = "forward_tokens"  # and the token positions its forward passes ran, all stages
_SCREENING = "screening"  # a screened trial: its subset scores, whether it was finished, and why not
_SUBSET_SCORES = "subset_scores"  # a fully evaluated trial of a screening study: its per-example scores on the subset
_STANDARD_ERRORS = "standard_errors"  # and the standard error of each objective's full score
_BEATING = "beating"  # its driver has begun beating a heartbeat for it (recycler/coordination.py)
# Keys of study user attributes.
_SIDE_BASELINE = "baseline:"  # + label: a baseline the space cannot express, scored beside the trials
_SCREENING_SUBSET = "screening_subset"  # the examples every candidate is screened on, by task (studies of one stage)
_SCREENING_STAGES = "screening_stages"  # the nested subsets every candidate is screened on, stage by stage
_BINDING = "recycler_binding"  # what the study searches: pool fingerprint, objectives, space
_STUDY = "recycler_study"  # the whole study description (study.json), so a reader needs only the database
# Key of a trial user attribute in a study's companion queue of side baselines (recycler/coordination.py).
_CLAIMS_LABEL = "side_baseline"  # the label of the side baseline this claim scores


@dataclass(frozen=True)
class ScreeningRecord:
    """What screening saw of a trial: its subset's scores and whether it was finished; a dropped
    trial also keeps the stage that dropped it, the front member that dominated it and its
    optimistic scores against that member (None where an objective is not bounded), and the
    objectives whose bound the study's history gave."""

    scores: dict[str, float]
    finished: bool
    dominated_by: int | None = None
    optimistic: list[float | None] | None = None
    stage: int = 0
    by_history: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StoredTrial:
    """One trial as recycler recorded it."""

    number: int
    state: TrialState
    values: list[float] | None
    params: dict[str, Any]
    recipe: dict[str, Any] | None  # None: stopped before its parameters were drawn
    scores: dict[str, float] | None
    baseline: str | None
    error: str | None
    attempt: int
    retry_of: int | None
    seconds: dict[str, float]  # merge, forward and whole-trial time, by key
    examples_scored: int | None  # None in studies from before costs were recorded
    forward_tokens: int | None  # None in studies from before tokens were counted
    screening: ScreeningRecord | None  # a screened trial's
    subset_scores: dict[str, list[float]] | None  # per objective, on the screening subset (fully evaluated trials)
    standard_errors: list[float] | None  # of each objective's full score (fully evaluated trials of screening studies)

    @property
    def screened_out(self) -> bool:
        return self.state == TrialState.PRUNED and self.screening is not None

    @classmethod
    def of(cls, trial: FrozenTrial) -> StoredTrial:
        return cls._read(trial.number, trial.state, trial.values, trial.params, trial.user_attrs)

    @classmethod
    def running(cls, trial: optuna.Trial) -> StoredTrial:
        """A trial a worker is scoring now."""
        return cls._read(trial.number, TrialState.RUNNING, None, trial.params, trial.user_attrs)

    @classmethod
    def _read(cls, number: int, state: TrialState, values: list[float] | None, params: dict[str, Any],
              attrs: dict[str, Any]) -> StoredTrial:
        return cls(
            number=number,
            state=state,
            values=values,
            params=params,
            recipe=_recipe(attrs),
            scores=attrs.get(_SCORES),
            baseline=attrs.get(_BASELINE),
            error=attrs.get(_ERROR),
            attempt=int(attrs.get(_ATTEMPT, 1)),
            retry_of=attrs.get(_RETRY_OF),
            seconds={key: attrs[key] for key in TIMING if key in attrs},
            examples_scored=attrs.get(_EXAMPLES_SCORED),
            forward_tokens=attrs.get(_FORWARD_TOKENS),
            screening=ScreeningRecord(**attrs[_SCREENING]) if _SCREENING in attrs else None,
            subset_scores=attrs.get(_SUBSET_SCORES),
            standard_errors=attrs.get(_STANDARD_ERRORS),
        )

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE


def _recipe(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe recorded; studies written before recipes were recorded hold linear weights."""
    if _RECIPE in attrs:
        return attrs[_RECIPE]
    if _WEIGHTS in attrs:
        return LinearRecipe(attrs[_WEIGHTS], relative=attrs.get(_RELATIVE, False)).to_json()
    return None


def stored_trials(study: optuna.Study, *, complete_only: bool = False) -> list[StoredTrial]:
    states = (TrialState.COMPLETE,) if complete_only else None
    return [StoredTrial.of(t) for t in study.get_trials(deepcopy=False, states=states)]


def queue_baseline(study: optuna.Study, params: dict[str, Any], label: str) -> None:
    """A baseline the space expresses, run as one of the first trials."""
    study.enqueue_trial(params, user_attrs={_BASELINE: label})


def queue_again(study: optuna.Study, trial: StoredTrial, *, attempt: int) -> None:
    """Queue a trial's parameters again as a new trial that remembers what it repeats."""
    attrs: dict[str, Any] = {_RETRY_OF: trial.number, _ATTEMPT: attempt}
    if trial.baseline is not None:
        attrs[_BASELINE] = trial.baseline
    study.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)


def record_candidate(trial: optuna.Trial, recipe: MergeRecipe) -> None:
    trial.set_user_attr(_RECIPE, recipe.to_json())
    trial.set_user_attr(_WEIGHTS, recipe.checkpoint_weights())


def record_scores(trial: optuna.Trial, result: CandidateResult) -> None:
    """A worker's result: every task's score, and the seconds spent merging, in forward passes, and in all."""
    trial.set_user_attr(_SCORES, result.scores)
    for key in TIMING:
        trial.set_user_attr(key, getattr(result.costs, key))


def record_cost(trial: optuna.Trial, examples: int, forward_tokens: int) -> None:
    """What the trial cost, every stage together: examples scored and token positions run."""
    trial.set_user_attr(_EXAMPLES_SCORED, examples)
    trial.set_user_attr(_FORWARD_TOKENS, forward_tokens)


def record_screening(trial: optuna.Trial, scores: dict[str, float], verdict: Verdict) -> None:
    """What screening saw, as a ScreeningRecord."""
    bounded = None if verdict.optimistic is None else [v if math.isfinite(v) else None for v in verdict.optimistic]
    record = ScreeningRecord(scores, verdict.finish, verdict.dominated_by, bounded, verdict.stage, list(verdict.by_history))
    trial.set_user_attr(_SCREENING, asdict(record))


def record_subset_scores(trial: optuna.Trial, scores: dict[str, list[float]], standard_errors: list[float]) -> None:
    """A fully evaluated trial's scores on the screening subset, which later candidates are paired
    with, and its full scores' standard errors, which credit it as a front member."""
    trial.set_user_attr(_SUBSET_SCORES, scores)
    trial.set_user_attr(_STANDARD_ERRORS, standard_errors)


def study_binding(study: optuna.Study) -> dict[str, Any] | None:
    """The pool fingerprint, objectives and space a study was created for; None for a study recycler
    did not create (or created before it bound its studies)."""
    return study.user_attrs.get(_BINDING)


def record_study_binding(study: optuna.Study, binding: dict[str, Any], description: dict[str, Any]) -> None:
    """Bind the study to what it searches, and keep its description (study.json's fields but the
    storage) for readers on other machines, such as a service on the same database."""
    study.set_user_attr(_BINDING, binding)
    study.set_user_attr(_STUDY, description)


def study_description(user_attrs: dict[str, Any]) -> dict[str, Any] | None:
    """A study's description from its user attributes (None for one recycler did not make)."""
    return user_attrs.get(_STUDY)


def screening_stages(study: optuna.Study) -> list[dict[str, list[int]]] | None:
    """The study's nested screening subsets, smallest first (a study of one stage from before
    stages kept its subset alone)."""
    if _SCREENING_STAGES in study.user_attrs:
        return study.user_attrs[_SCREENING_STAGES]
    subset = study.user_attrs.get(_SCREENING_SUBSET)
    return None if subset is None else [subset]


def record_screening_stages(study: optuna.Study, stages: list[dict[str, list[int]]]) -> None:
    study.set_user_attr(_SCREENING_STAGES, stages)


def record_error(trial: optuna.Trial, error: str) -> None:
    trial.set_user_attr(_ERROR, error)


@dataclass(frozen=True)
class SideBaseline:
    """A baseline the search space cannot express, scored beside the trials: scores, or the error."""

    label: str
    recipe: dict[str, Any]
    scores: dict[str, float] | None = None
    error: str | None = None


def side_baselines(study: optuna.Study) -> dict[str, SideBaseline]:
    """Baselines scored beside the trials, by label."""
    return {
        key[len(_SIDE_BASELINE):]: SideBaseline(label=key[len(_SIDE_BASELINE):], **value)
        for key, value in study.user_attrs.items()
        if key.startswith(_SIDE_BASELINE)
    }


def mark_beating(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    storage.set_trial_user_attr(trial_id, _BEATING, True)


def is_beating(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(_BEATING))


def side_baseline_queue(study_name: str) -> str:
    """The name of the companion study whose waiting trials are the side baselines still to score."""
    return f"{study_name}:side-baselines"


def queue_side_baseline(claims: optuna.Study, label: str) -> None:
    claims.enqueue_trial({}, user_attrs={_CLAIMS_LABEL: label}, skip_if_exists=False)


def side_baseline_label(trial: FrozenTrial) -> str | None:
    """The side baseline a trial of the companion queue stands for (None for a trial of a study)."""
    return trial.user_attrs.get(_CLAIMS_LABEL)


def record_side_baseline(study: optuna.Study, baseline: SideBaseline) -> None:
    entry: dict[str, Any] = {"recipe": baseline.recipe}
    if baseline.error is not None:
        entry["error"] = baseline.error
    else:
        entry["scores"] = baseline.scores
    study.set_user_attr(_SIDE_BASELINE + baseline.label, entry)


class ExampleRow(TypedDict):
    """One example of a generation task: the candidate's answer beside the baseline's."""

    index: Annotated[int, Field(description="the example's position in the task (the suite's order)")]
    prompt: str
    target: str
    answer: Annotated[str, Field(description="the candidate's answer after the task's filters (what the metric compared)")]
    score: Annotated[float | None, Field(description="the metric's value for this example; null for a corpus metric "
                                                     "(bleu, f1), whose per-example value is not a score alone")]
    beside_answer: str | None
    beside_score: float | None


class TaskComparison(TypedDict):
    """A few examples of one generation task, those where the two answers differ first."""

    total: Annotated[int, Field(description="examples the task scored")]
    differ: Annotated[int | None, Field(description="examples where the candidate's answer differs from the baseline's")]
    examples: list[ExampleRow]


class ExampleComparison(TypedDict):
    """A candidate's example answers beside a baseline's, by generation task."""

    beside: Annotated[str | None, Field(description="the baseline compared against; null when no baseline kept its examples")]
    kept: Annotated[bool, Field(description="whether the study kept this candidate's per-example results (older studies did not)")]
    tasks: dict[str, TaskComparison]


class FrontEntry(TypedDict):
    """A trial or side baseline as the front shows it: `recycler front --format json`, the report, the API."""

    trial: Annotated[int | None, Field(description="trial number; null for a baseline scored beside the search")]
    baseline: bool
    baseline_name: str | None
    on_front: bool
    screened_out: Annotated[bool, Field(description="dropped at screening: `scores` are its subset's, never on the front")]
    dominated_by: Annotated[int | None, Field(description="dropped at screening: the fully evaluated trial that dominated its optimistic scores")]
    dropped_at_stage: Annotated[int | None, Field(description="dropped at screening: the stage whose verdict dropped it (1: the first subset)")]
    beaten_by_front: Annotated[bool | None, Field(description="baselines: whether a front member dominates it")]
    method: str
    settings: dict[str, Any]
    weights: dict[str, float]
    scores: dict[str, float]
    recipe: dict[str, Any]
    examples: NotRequired[Annotated[ExampleComparison, Field(description="merges and front members, when asked (`--examples N`)")]]


def entry_key(entry: FrontEntry) -> int | str:
    """What names a front entry in plots and in the study folder: its trial number, or a side
    baseline's label."""
    return entry["baseline_name"] if entry["trial"] is None else entry["trial"]


class FrontDocument(TypedDict):
    """The document `recycler front --format json` prints and the API returns."""

    study: str
    objectives: list[str]
    held_out: list[str]
    trials: list[FrontEntry]
