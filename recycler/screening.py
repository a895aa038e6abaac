"""Screening: score each candidate on a fixed subset of every task's examples first, and finish it
only if it can still reach the front.

The subset is the same for every candidate, drawn once per study, stratified by prompt length and
seeded, and stored on the study; each fully evaluated trial keeps its own scores on it. A candidate
is compared with each front member on the same subset examples (paired): its optimistic full score
per objective is the member's full score plus a one-sided confidence bound on the candidate's
difference from the member, the difference on the subset examples standing for the difference on
the rest. Pairing cancels the subset's own error (a subset harder or easier than its task shifts
both alike); BENCHMARKS.md section 8 measured an unpaired bound (the candidate's subset mean alone
against the members' full scores) dropping front members far more often than its confidence says.
The candidate is dropped if a member dominates its optimistic scores against that member.
Finishing scores the remaining examples only, and the task's own aggregation over all of them gives
exactly full evaluation's score.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from recycler.evaluate import Selection
from recycler.pareto import dominates
from recycler.results import TaskExamples


def choose_subset(prompts: Mapping[str, list[Mapping[str, str]]], fraction: float, seed: int) -> dict[str, list[int]]:
    """Per task, about `fraction` of its examples: the examples sorted by prompt length are cut into
    equal strata and one is drawn from each, so short and long prompts are both represented."""
    subset = {}
    for task, texts in prompts.items():
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]["prompt"]), i))
        strata = max(1, min(len(order), round(len(order) * fraction)))
        rng = random.Random(f"{seed}:{task}")
        bounds = [round(k * len(order) / strata) for k in range(strata + 1)]
        subset[task] = sorted(rng.choice(order[lo:hi]) for lo, hi in zip(bounds, bounds[1:]))
    return subset


def complement(subset: Selection, totals: Mapping[str, int]) -> dict[str, list[int]]:
    return {task: sorted(set(range(total)) - set(subset.get(task, ()))) for task, total in totals.items()}


def _paired_bound(candidate: list[float], member: list[float], member_full: float, total: int, z: float,
                  upper: bool) -> float:
    """A one-sided bound on the candidate's full score: the member's full score plus the candidate's
    difference from it on the subset, and on the unscored examples the subset's mean difference
    widened by z standard errors. The spread counts one extra unit of squared difference (the
    largest a 0/1 metric has), so the bound stays wide where the two agree on every subset example."""
    n = len(candidate)
    if n == 0:
        return math.inf if upper else -math.inf
    differences = [c - m for c, m in zip(candidate, member)]
    mean = statistics.fmean(differences)
    spread = math.sqrt((sum((d - mean) ** 2 for d in differences) + 1) / n)
    rest = mean + (z if upper else -z) * spread / math.sqrt(n)
    return member_full + (sum(differences) + (total - n) * rest) / total


@dataclass(frozen=True)
class FrontMember:
    """A fully evaluated trial on the front, as screening compares candidates with it."""

    number: int
    values: list[float]
    subset_scores: dict[str, list[float]]  # its per-example scores on the subset, by objective, in subset order


@dataclass(frozen=True)
class Verdict:
    """Screening's decision on a candidate."""

    finish: bool
    dominated_by: int | None = None  # the member that dominates its optimistic scores, when dropped
    optimistic: list[float] | None = None  # its optimistic scores against that member (None: not bounded)


@dataclass(frozen=True)
class Screening:
    """The study's screening: its subset, each task's example count, and the confidence bound."""

    subset: dict[str, list[int]]
    totals: dict[str, int]
    confidence: float
    mean_tasks: frozenset[str]  # tasks whose score is the mean of their examples' values

    @property
    def rest(self) -> dict[str, list[int]]:
        return complement(self.subset, self.totals)

    @property
    def examples(self) -> int:
        """Examples a full evaluation scores."""
        return sum(self.totals.values())

    @property
    def screened_examples(self) -> int:
        return sum(len(indices) for indices in self.subset.values())

    def on_subset(self, examples: Mapping[str, TaskExamples], objectives: list[str]) -> dict[str, list[float]]:
        """Each objective's per-example scores on the subset, in subset order, from a stage's results
        (with their indices) or a full evaluation's (every example, in order)."""
        chosen = {}
        for task in objectives:
            by_index = examples[task].by_index()
            chosen[task] = [by_index[i] for i in self.subset[task]]
        return chosen

    def optimistic(self, candidate: Mapping[str, list[float]], member: FrontMember, objectives: list[str],
                   directions: list[str]) -> list[float]:
        """The candidate's best plausible full scores, paired with one front member; an objective
        whose score is not a mean is not bounded (it never causes a drop)."""
        z = statistics.NormalDist().inv_cdf(self.confidence)
        bounds = []
        for task, direction, member_full in zip(objectives, directions, member.values):
            upper = direction == "maximize"
            if task not in self.mean_tasks:
                bounds.append(math.inf if upper else -math.inf)
                continue
            bounds.append(_paired_bound(candidate[task], member.subset_scores[task], member_full, self.totals[task], z, upper))
        return bounds

    def verdict(self, candidate: Mapping[str, list[float]], front: list[FrontMember], objectives: list[str],
                directions: list[str]) -> Verdict:
        """Drop the candidate if a front member dominates its optimistic scores against that member."""
        for member in front:
            optimistic = self.optimistic(candidate, member, objectives, directions)
            if dominates(member.values, optimistic, directions):
                return Verdict(False, member.number, optimistic)
        return Verdict(True)
