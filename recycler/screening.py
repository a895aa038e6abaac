"""Screening: score each candidate on a fixed subset of every task's examples first, and finish it
only if it can still reach the front.

The subsets are the same for every candidate, drawn once per study, stratified by prompt length and
seeded, and stored on the study; with a schedule of stages (10% → 30% → the rest) they are nested,
each stage adding examples to the last. Each fully evaluated trial keeps its own scores on the
largest subset and the standard error of each full score. At each stage a candidate is compared with
each front member on the same examples (paired): its optimistic full score per objective is the
member's full score plus a one-sided confidence bound on the candidate's difference from the member,
the difference on the subset standing for the difference on the rest. Pairing cancels the subset's
own error (a subset harder or easier than its task shifts both alike). Once the study has enough
fully scored trials, their history also estimates the full score from the subset's examples
(recycler/score_estimates.py); where that interval is the tighter one, it bounds the candidate.
The candidate is dropped if a member, credited `member_credit` standard errors of its own full
scores, dominates its optimistic scores: a full score is itself a sample, and a candidate that could
beat a member only by less than that member's noise is a tie (BENCHMARKS.md section 8).
Finishing scores the remaining examples only, and the task's own aggregation over all of them gives
exactly full evaluation's score.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from recycler.evaluate import Selection
from recycler.pareto import dominates
from recycler.results import TaskExamples
from recycler.score_estimates import SubsetEstimator, fit_estimator


def choose_stages(prompts: Mapping[str, list[Mapping[str, str]]], fractions: Sequence[float], seed: int) -> list[dict[str, list[int]]]:
    """Per stage, per task, about `fraction` of its examples, each stage holding the last: the
    examples a stage adds are drawn from those left, sorted by prompt length and cut into equal
    strata, one from each, so short and long prompts are both represented."""
    stages: list[dict[str, list[int]]] = []
    chosen: dict[str, list[int]] = {task: [] for task in prompts}
    for stage, fraction in enumerate(fractions):
        for task, texts in prompts.items():
            taken = set(chosen[task])
            left = sorted((i for i in range(len(texts)) if i not in taken), key=lambda i: (len(texts[i]["prompt"]), i))
            count = max(1, min(len(left), round(len(texts) * fraction) - len(taken)))
            rng = random.Random(f"{seed}:{task}" if stage == 0 else f"{seed}:{task}:{stage}")
            bounds = [round(k * len(left) / count) for k in range(count + 1)]
            chosen[task] = sorted(taken | {rng.choice(left[lo:hi]) for lo, hi in zip(bounds, bounds[1:]) if hi > lo})
        stages.append({task: list(indices) for task, indices in chosen.items()})
    return stages


def complement(subset: Selection, totals: Mapping[str, int]) -> dict[str, list[int]]:
    return {task: sorted(set(range(total)) - set(subset.get(task, ()))) for task, total in totals.items()}


def _paired_bound(candidate: list[float], member: list[float], member_full: float, total: int, z: float) -> tuple[float, float]:
    """The candidate's full score as the member's full score plus its difference from the member on
    the subset, and on the unscored examples the subset's mean difference; with the half-width of
    a one-sided bound on it, z standard errors of that mean. The spread counts one extra unit of
    squared difference (the largest a 0/1 metric has), so the bound stays wide where the two agree
    on every subset example."""
    n = len(candidate)
    differences = [c - m for c, m in zip(candidate, member)]
    mean = statistics.fmean(differences)
    spread = math.sqrt((sum((d - mean) ** 2 for d in differences) + 1) / n)
    center = member_full + (sum(differences) + (total - n) * mean) / total
    return center, (total - n) * z * spread / math.sqrt(n) / total


def standard_error(values: Sequence[float | None]) -> float:
    """The standard error of a mean-aggregated score over these per-example values."""
    numbers = [v for v in values if v is not None]
    return statistics.pstdev(numbers) / math.sqrt(len(numbers)) if len(numbers) > 1 else 0.0


@dataclass(frozen=True)
class FrontMember:
    """A fully evaluated trial as screening compares candidates with it (a front member) or learns
    from it (the study's history)."""

    number: int
    values: list[float]
    subset_scores: dict[str, list[float]]  # its per-example scores on the largest subset, by objective, in subset order
    standard_errors: list[float] | None = None  # of each full score (None: kept before they were; no credit)


def credited(member: FrontMember, directions: list[str], credit: float) -> list[float]:
    """The member's full scores moved `credit` standard errors its way."""
    errors = member.standard_errors or [0.0] * len(member.values)
    return [v + (1 if d == "maximize" else -1) * credit * e for v, d, e in zip(member.values, directions, errors)]


@dataclass(frozen=True)
class Verdict:
    """Screening's decision on a candidate at one stage."""

    finish: bool  # go on: to the next stage, or to the rest of the examples after the last
    stage: int = 0
    dominated_by: int | None = None  # the member that dominates its optimistic scores, when dropped
    optimistic: list[float] | None = None  # its optimistic scores against that member (None: not bounded)
    by_history: tuple[str, ...] = ()  # objectives whose bound came from the study's history


@dataclass(frozen=True)
class Screening:
    """The study's screening: its nested subsets, each task's example count, the confidence bound,
    the credit each front member gets, and when the study's history starts to estimate."""

    stages: list[dict[str, list[int]]]  # cumulative: stage k's examples include stage k-1's
    totals: dict[str, int]
    confidence: float
    mean_tasks: frozenset[str]  # tasks whose score is the mean of their examples' values
    member_credit: float = 0.0  # standard errors of its full scores credited to each front member
    history_after: int | None = None  # fully scored trials before the history estimates (None: never)

    @property
    def subset(self) -> dict[str, list[int]]:
        """The largest subset: the one fully evaluated trials keep their scores on."""
        return self.stages[-1]

    @property
    def rest(self) -> dict[str, list[int]]:
        return complement(self.subset, self.totals)

    def stage_examples(self, stage: int) -> dict[str, list[int]]:
        """The examples stage `stage` adds to the ones before it."""
        if stage == 0:
            return self.stages[0]
        before = self.stages[stage - 1]
        return {task: sorted(set(indices) - set(before[task])) for task, indices in self.stages[stage].items()}

    def on_subset(self, examples: Mapping[str, TaskExamples], objectives: list[str], stage: int = -1) -> dict[str, list[float]]:
        """Each objective's per-example scores on a stage's subset (default: the largest), in subset
        order, from a stage's results (with their indices) or a full evaluation's (every example)."""
        chosen = {}
        for task in objectives:
            by_index = examples[task].by_index()
            chosen[task] = [by_index[i] for i in self.stages[stage][task]]
        return chosen

    def standard_errors(self, examples: Mapping[str, TaskExamples], objectives: list[str]) -> list[float]:
        """A full evaluation's standard error per objective (0 where the score is not a mean)."""
        return [standard_error(examples[task].scores) if task in self.mean_tasks else 0.0 for task in objectives]

    def _member_on_stage(self, member: FrontMember, task: str, stage: int) -> list[float]:
        if stage in (-1, len(self.stages) - 1):
            return member.subset_scores[task]
        position = {index: k for k, index in enumerate(self.subset[task])}
        return [member.subset_scores[task][position[i]] for i in self.stages[stage][task]]

    def estimators(self, history: list[FrontMember], objectives: list[str], stage: int) -> dict[str, SubsetEstimator]:
        """Per mean objective, the study's history fitted at this stage; none before `history_after`
        trials, and none for a task the history never varied on (an error of 0 would claim to know
        a candidate that differs from every trial so far)."""
        if self.history_after is None or len(history) < self.history_after:
            return {}
        fitted = {task: fit_estimator([self._member_on_stage(t, task, stage) for t in history], [t.values[k] for t in history])
                  for k, task in enumerate(objectives) if task in self.mean_tasks}
        return {task: estimator for task, estimator in fitted.items() if estimator.error > 0}

    def optimistic(self, candidate: Mapping[str, list[float]], member: FrontMember, objectives: list[str],
                   directions: list[str], stage: int = -1,
                   estimators: Mapping[str, SubsetEstimator] | None = None) -> tuple[list[float], tuple[str, ...]]:
        """The candidate's best plausible full scores, paired with one front member or, where the
        history's interval is tighter, estimated from it; and the objectives the history bounded.
        An objective whose score is not a mean is not bounded (it never causes a drop)."""
        z = statistics.NormalDist().inv_cdf(self.confidence)
        bounds, by_history = [], []
        for task, direction, member_full in zip(objectives, directions, member.values):
            sign = 1 if direction == "maximize" else -1
            if task not in self.mean_tasks or not candidate[task]:
                bounds.append(sign * math.inf)
                continue
            center, half = _paired_bound(candidate[task], self._member_on_stage(member, task, stage), member_full,
                                         self.totals[task], z)
            estimator = (estimators or {}).get(task)
            if estimator is not None and (width := estimator.half_width(candidate[task], z)) < half:
                center, half = estimator.estimate(candidate[task]), width
                by_history.append(task)
            bounds.append(center + sign * half)
        return bounds, tuple(by_history)

    def verdict(self, candidate: Mapping[str, list[float]], front: list[FrontMember], objectives: list[str],
                directions: list[str], stage: int = -1, history: list[FrontMember] | None = None) -> Verdict:
        """Drop the candidate if a front member, credited its noise, dominates its optimistic scores
        against that member; `history` (every fully scored trial) may tighten the bound."""
        estimators = self.estimators(history or [], objectives, stage)
        number = stage % len(self.stages)
        for member in front:
            optimistic, by_history = self.optimistic(candidate, member, objectives, directions, stage, estimators)
            if dominates(credited(member, directions, self.member_credit), optimistic, directions):
                return Verdict(False, number, member.number, optimistic, by_history)
        return Verdict(True, number)
