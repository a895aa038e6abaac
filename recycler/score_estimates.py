"""A task's full score estimated from a screening stage's examples, learned from the study's own history.

Merges of one pool answer the same examples alike, so a candidate's results on the subset predict
its full score better than a binomial bound assumes: an example most merges get right says little,
one that separates them says much. Every fully scored trial of the study is a training point (its
per-example results on the subset, its exact full score), and a ridge regression with an intercept
weights the examples by how well they predict across those trials (the spirit of tinyBenchmarks'
estimators, with the study in place of a benchmark's many models). The ridge strength is chosen
from a short grid by leave-one-trial-out error, computed exactly from the fit's hat matrix, and that
error is the estimate's own: an interval `z × error × sqrt(1 + leverage)` widens for a candidate
unlike the trials it learned from. Screening uses it only to decide what to finish: a front
member's scores are always its exact ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RIDGE_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # times the mean squared singular value of the centred examples


@dataclass(frozen=True)
class SubsetEstimator:
    """One task's full score as an intercept plus a weight per subset example."""

    mean_items: np.ndarray  # the training trials' mean result per example
    mean_score: float
    weights: np.ndarray  # per subset example
    basis: np.ndarray  # right singular vectors of the centred training examples (for the leverage)
    squared_singular: np.ndarray
    ridge: float
    error: float  # leave-one-trial-out root mean squared error of the full score
    trials: int

    def estimate(self, items: Sequence[float]) -> float:
        return float(self.mean_score + (np.asarray(items, dtype=float) - self.mean_items) @ self.weights)

    def leverage(self, items: Sequence[float]) -> float:
        """How far the candidate lies from the training trials, as the fit sees it: 1/trials for
        their mean, more for a candidate unlike them."""
        centred = np.asarray(items, dtype=float) - self.mean_items
        along = self.basis @ centred
        outside = max(float(centred @ centred - along @ along), 0.0)
        return 1.0 / self.trials + float(along**2 @ (1.0 / (self.squared_singular + self.ridge))) + outside / self.ridge

    def half_width(self, items: Sequence[float], z: float) -> float:
        """A one-sided bound's distance from the estimate, at `z` standard normal deviates."""
        return z * self.error * float(np.sqrt(1.0 + self.leverage(items)))


def fit_estimator(items: Sequence[Sequence[float]], scores: Sequence[float]) -> SubsetEstimator:
    """Fit on fully scored trials: `items[t]` is trial t's result on each subset example, `scores[t]`
    its full score. Needs at least 3 trials (leave-one-out of 2 says nothing)."""
    x = np.asarray(items, dtype=float)
    y = np.asarray(scores, dtype=float)
    trials = len(y)
    if trials < 3 or x.shape[0] != trials:
        raise ValueError(f"fit_estimator needs one row of items per score and at least 3 trials, got {x.shape} and {trials}")
    mean_items, mean_score = x.mean(axis=0), float(y.mean())
    centred_x, centred_y = x - mean_items, y - mean_score
    u, s, vt = np.linalg.svd(centred_x, full_matrices=False)
    squared = s**2
    scale = float(squared.sum()) / max(len(squared), 1) or 1.0  # an all-equal history: any ridge, no weights
    projected = u.T @ centred_y
    best: tuple[float, float, np.ndarray] | None = None
    for factor in RIDGE_GRID:
        ridge = factor * scale
        shrink = squared / (squared + ridge)
        fitted = u @ (shrink * projected)
        hat = 1.0 / trials + (u**2) @ shrink
        loo = (centred_y - fitted) / (1.0 - hat)
        error = float(np.sqrt(np.mean(loo**2)))
        if best is None or error < best[0]:
            best = (error, ridge, vt.T @ (s / (squared + ridge) * projected))
    error, ridge, weights = best
    return SubsetEstimator(mean_items, mean_score, weights, vt, squared, ridge, error, trials)
