"""Screening: score each candidate on a fixed subset of every task's examples first, and finish it
only if it can still reach the front.

The subset is the same for every candidate, drawn once per study, stratified by prompt length and
seeded, and stored on the study. The decision compares a candidate's bound from the subset with the
front members' full scores (not their subset scores): a subset that is harder or easier than its
task biases every candidate alike, and the bound does not model that (BENCHMARKS.md section 8
measured its coverage below the nominal confidence on one seed). A screened candidate's optimistic score per
objective assumes its unscored examples do as well as a one-sided confidence bound from the scored
ones allows (Wilson's bound for 0/1 metrics, a normal bound otherwise); it is finished only if no
fully evaluated trial dominates those optimistic scores. Finishing scores the remaining examples
only, and the task's own aggregation over all of them gives exactly full evaluation's score.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recycler.evaluate import Selection
from recycler.front import dominates


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


def _rest_bound(values: list[float], z: float, upper: bool) -> float:
    """A one-sided bound on the mean of the unscored examples from the scored ones."""
    n = len(values)
    if n == 0:
        return math.inf if upper else -math.inf
    mean = statistics.fmean(values)
    if set(values) <= {0.0, 1.0}:  # Wilson score interval of a proportion
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre + half if upper else centre - half
    if n < 2:
        return math.inf if upper else -math.inf
    half = z * statistics.stdev(values) / math.sqrt(n)
    return mean + half if upper else mean - half


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

    def optimistic(self, examples: Mapping[str, Any], objectives: list[str], directions: list[str]) -> list[float]:
        """Each objective's best plausible full score given the screened examples' values; an
        objective whose score is not a mean is not bounded (it never causes a drop)."""
        z = statistics.NormalDist().inv_cdf(self.confidence)
        bounds = []
        for task, direction in zip(objectives, directions):
            upper = direction == "maximize"
            if task not in self.mean_tasks:
                bounds.append(math.inf if upper else -math.inf)
                continue
            values = examples[task]["scores"]
            unscored = self.totals[task] - len(values)
            bounds.append((sum(values) + unscored * _rest_bound(values, z, upper)) / self.totals[task])
        return bounds

    def worth_finishing(self, optimistic: list[float], front: list[list[float]], directions: list[str]) -> bool:
        return not any(dominates(member, optimistic, directions) for member in front)


def merge_stages(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, dict[str, list]]:
    """Two stages' per-example results (each with its `indices`) as one full result, in example order."""
    merged = {}
    for task in first:
        rows = sorted(
            (index, stage["scores"][k], stage["answers"][k] if "answers" in stage else None)
            for stage in (first[task], second[task])
            for k, index in enumerate(stage["indices"])
        )
        merged[task] = {"scores": [score for _, score, _ in rows]}
        if "answers" in first[task]:
            merged[task]["answers"] = [answer for _, _, answer in rows]
    return merged
