"""Narrowing a many-objective front to the trade-off a person wants: constraints on scores, a
ranking by preference, a row limit. Used by `recycler front`, `recycler report`, `recycler export
--pick` and the service's front.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recycler.errors import RecyclerError
from recycler.pareto import signs
from recycler.records import FrontEntry
from recycler.study import StudyInfo

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*(>=|<=|==|>|<)\s*([-+0-9.eE]+)\s*$")
BALANCED = "balanced"


@dataclass(frozen=True)
class Constraint:
    """A bound on one task's score, such as `reverse>=0.9`."""

    task: str
    op: str
    value: float

    def holds(self, scores: dict[str, float]) -> bool:
        return _OPERATORS[self.op](scores[self.task], self.value)


def parse_constraint(text: str, tasks: list[str]) -> Constraint:
    match = _CONSTRAINT.match(text)
    if not match:
        raise RecyclerError(f"--where {text!r}: expected TASK OP NUMBER with OP one of >= <= > < ==, e.g. 'reverse>=0.9'")
    task, op, number = match.groups()
    if task not in tasks:
        raise RecyclerError(f"--where {text!r}: unknown task '{task}' (tasks: {', '.join(tasks)})")
    try:
        value = float(number)
    except ValueError:
        raise RecyclerError(f"--where {text!r}: '{number}' is not a number") from None
    return Constraint(task, op, value)


def parse_preference(text: str, objectives: list[str]) -> dict[str, float] | None:
    """'balanced' (None), or weights over objectives such as 'add=2,reverse=1' (others weigh 0)."""
    if text == BALANCED:
        return None
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, number = part.partition("=")
        name = name.strip()
        if not sep or name not in objectives:
            raise RecyclerError(f"--rank {text!r}: expected 'balanced' or OBJECTIVE=WEIGHT,... over {', '.join(objectives)}")
        try:
            weights[name] = float(number)
        except ValueError:
            raise RecyclerError(f"--rank {text!r}: '{number.strip()}' is not a number") from None
    return weights


def _normalized(records: list[FrontEntry], info: StudyInfo) -> np.ndarray:
    """Each objective oriented so higher is better and min-max scaled over these records."""
    values = np.array([[r["scores"][o] for o in info.objectives] for r in records], dtype=float)
    oriented = values * signs(info.directions)
    low, high = oriented.min(axis=0), oriented.max(axis=0)
    return (oriented - low) / np.where(high > low, high - low, 1.0)


def rank(records: list[FrontEntry], info: StudyInfo, preference: dict[str, float] | None) -> list[FrontEntry]:
    """Best first: by the worst normalized objective ('balanced'), or by the weighted sum of the
    normalized objectives; ties keep trial order."""
    if not records:
        return []
    scaled = _normalized(records, info)
    if preference is None:
        merit = scaled.min(axis=1)
    else:
        merit = scaled @ np.array([preference.get(o, 0.0) for o in info.objectives])
    order = sorted(range(len(records)), key=lambda i: -merit[i])
    return [records[i] for i in order]


def select(records: list[FrontEntry], info: StudyInfo, *, where: list[str] = (), preference: str | None = None,
           limit: int | None = None, front_only: bool = True) -> list[FrontEntry]:
    """The front members (or, not front_only, every trial) meeting every constraint, ranked by the
    preference, at most `limit` of them."""
    tasks = info.objectives + info.held_out
    constraints = [parse_constraint(text, tasks) for text in where]
    if limit is not None and limit < 1:
        raise RecyclerError(f"--limit {limit}: must be at least 1")
    pool = [r for r in records if r["on_front"]] if front_only else [r for r in records if r["trial"] is not None]
    candidates = [r for r in pool if all(c.holds(r["scores"]) for c in constraints)]
    if preference is not None:
        candidates = rank(candidates, info, parse_preference(preference, info.objectives))
    return candidates[:limit] if limit is not None else candidates


def narrow(records: list[FrontEntry], info: StudyInfo, *, where: list[str] = (), preference: str | None = None,
           limit: int | None = None, front_only: bool = True) -> list[FrontEntry]:
    """What a front table or document shows when narrowed: the selected members first, then the
    baselines for reference; every record when nothing narrows it."""
    if not where and preference is None and limit is None:
        return records
    chosen = select(records, info, where=where, preference=preference, limit=limit, front_only=front_only)
    return chosen + [r for r in records if r["baseline"] and r not in chosen]


def most_balanced(records: list[FrontEntry], info: StudyInfo) -> FrontEntry:
    """The front member whose worst held-in objective (min-max normalized over the front) is best."""
    return rank([r for r in records if r["on_front"]] or records, info, None)[0]
