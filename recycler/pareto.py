"""Pareto dominance and hypervolume over objective values: numbers in, numbers out.

Nothing here knows studies, trials or files, so screening, the search's progress bar, the front and
the benchmarks share one definition of "better" without importing each other. The only recycler
import is the wrapper of Optuna's private hypervolume (recycler/library_seams.py, a leaf).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recycler.library_seams import compute_hypervolume


def signs(directions: Sequence[str]) -> np.ndarray:
    """+1 for an objective to maximize, -1 for one to minimize: values times signs are better when higher."""
    return np.array([1.0 if d == "maximize" else -1.0 for d in directions])


def losses(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Values turned into losses (lower is better on every objective), as hypervolume takes them."""
    return -np.asarray(values, dtype=float) * signs(directions)


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """a is at least as good as b on every objective and differs on one."""
    better = [x * s >= y * s for x, y, s in zip(a, b, signs(directions))]
    return all(better) and any(x != y for x, y in zip(a, b))


def hypervolume(values: list[list[float]], directions: Sequence[str], reference: np.ndarray) -> float:
    """Hypervolume dominated by these points and bounded by the reference point (given as losses)."""
    if not values:
        return 0.0
    points = losses(np.array(values, dtype=float), directions)
    inside = points[(points < reference).all(axis=1)]
    return float(compute_hypervolume(inside, reference)) if len(inside) else 0.0


class FrontTracker:
    """The non-dominated values seen so far and their hypervolume, kept one point at a time: only a
    point that enters the front changes the hypervolume, and only the front is measured."""

    def __init__(self, directions: Sequence[str], reference: np.ndarray) -> None:
        self.directions = directions
        self.reference = reference
        self.front: list[list[float]] = []
        self.hypervolume = 0.0

    def add(self, values: list[float]) -> float:
        if not any(dominates(member, values, self.directions) for member in self.front):
            self.front = [m for m in self.front if not dominates(values, m, self.directions)] + [values]
            self.hypervolume = hypervolume(self.front, self.directions, self.reference)
        return self.hypervolume
