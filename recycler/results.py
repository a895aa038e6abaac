"""What scoring a candidate gives: one type from the worker, through the search, to the study folder.

A `CandidateResult` is a worker's answer for one candidate: every task's score, each example's
result (`TaskExamples`), what it cost, or the one-line reason there is no result. A screening stage
scores a selection of examples, so its `TaskExamples` carry their indices; two stages put together
(`CandidateResult.then`) are exactly a full evaluation's examples. The study folder keeps a
candidate's `TaskExamples` in their JSON form (recycler/examples.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class TaskExamples:
    """One task's results per example, in the suite's example order: the metric's value and, for a
    generation task, the answer after the task's filters (what the metric compared)."""

    scores: list[float | None]  # None: a corpus metric's per-example value (bleu, f1: a pair), not comparable alone
    answers: list[str] | None = None  # generation tasks only
    indices: list[int] | None = None  # the examples scored, when not all of them (a screening stage)

    def by_index(self) -> dict[int, float | None]:
        """Each scored example's value by its index in the task."""
        return dict(zip(self.indices if self.indices is not None else range(len(self.scores)), self.scores))

    def then(self, other: TaskExamples) -> TaskExamples:
        """Two stages' examples as one result over all of them, in example order; it keeps their
        indices unless they are every example from the first on (a screening stage's then a full
        evaluation's, or the start of a task's)."""
        rows = sorted(
            (index, stage.scores[k], stage.answers[k] if stage.answers is not None else None)
            for stage in (self, other)
            for k, index in enumerate(stage.indices if stage.indices is not None else range(len(stage.scores)))
        )
        answers = [answer for _, _, answer in rows] if self.answers is not None else None
        indices = [index for index, _, _ in rows]
        return TaskExamples([score for _, score, _ in rows], answers, None if indices == list(range(len(rows))) else indices)

    @staticmethod
    def joined(parts: list[TaskExamples]) -> TaskExamples:
        """A group's examples: its members' one after another (as Suite.example_texts lists their
        prompts), with answers where every member has them."""
        answers = [a for part in parts for a in part.answers] if all(part.answers is not None for part in parts) else None
        return TaskExamples([score for part in parts for score in part.scores], answers)

    def to_json(self) -> dict[str, list]:
        """The file form: 0.0 and 1.0 written as 0 and 1 (most per-example values are), absent fields left out."""
        scores = [int(v) if v is not None and float(v).is_integer() else v for v in self.scores]
        optional = {"answers": self.answers, "indices": self.indices}
        return {"scores": scores, **{key: value for key, value in optional.items() if value is not None}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskExamples:
        return cls([None if v is None else float(v) for v in data["scores"]], data.get("answers"), data.get("indices"))


@dataclass(frozen=True)
class Costs:
    """What scoring a candidate cost: seconds merging, in forward passes, and in all, and the token
    positions the forward passes ran. Stages add up."""

    merge_seconds: float = 0.0
    forward_seconds: float = 0.0
    trial_seconds: float = 0.0
    forward_tokens: int = 0

    def __add__(self, other: Costs) -> Costs:
        return Costs(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


TIMING = tuple(f.name for f in fields(Costs) if f.name.endswith("_seconds"))  # what a trial records of its time


@dataclass(frozen=True)
class CandidateResult:
    """A candidate's scores by task and examples by task, and what they cost; or `error`, why there
    are none (a merge with NaN weights, a scorer that raised, a worker that died)."""

    scores: dict[str, float] = field(default_factory=dict)
    examples: dict[str, TaskExamples] = field(default_factory=dict)
    costs: Costs = field(default_factory=Costs)
    error: str | None = None

    @classmethod
    def failed(cls, reason: str) -> CandidateResult:
        return cls(error=reason)

    @property
    def bad(self) -> str | None:
        """Why this is no candidate to keep: its error, or the first task whose score is not a finite number."""
        if self.error is not None:
            return self.error
        bad = [task for task, value in self.scores.items() if not isinstance(value, (int, float)) or not math.isfinite(value)]
        return f"non-finite score on task '{bad[0]}'" if bad else None

    @property
    def examples_scored(self) -> int:
        return sum(len(task.scores) for task in self.examples.values())

    def then(self, rest: CandidateResult, score: Callable[[dict[str, TaskExamples]], dict[str, float]]) -> CandidateResult:
        """This screening stage and the next as one result (after the last stage: a full one), each
        task's score put together by `score` from all their examples; the later stage's error, if it failed."""
        if rest.error is not None:
            return rest
        examples = {task: part.then(rest.examples[task]) for task, part in self.examples.items()}
        return CandidateResult(score(examples), examples, self.costs + rest.costs)
