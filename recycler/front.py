"""The Pareto front of a study, with the baselines beside it, as records, tables and hypervolume."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna._hypervolume import compute_hypervolume  # Optuna's own WFG implementation
from optuna.trial import FrozenTrial, TrialState

from recycler.study import StudyInfo


def is_baseline(trial: FrozenTrial) -> bool:
    return "baseline" in trial.user_attrs


def _losses(values: np.ndarray, directions: list[str]) -> np.ndarray:
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return values * signs


def reference_point(trials: list[FrozenTrial], directions: list[str]) -> np.ndarray | None:
    """The worst baseline value per objective (as a loss): hypervolume then measures what the
    search gained over the baselines, in the objectives' own units."""
    baselines = [t.values for t in trials if is_baseline(t) and t.state == TrialState.COMPLETE]
    if not baselines:
        return None
    return _losses(np.array(baselines, dtype=float), directions).max(axis=0)


def hypervolume(values: list[list[float]], directions: list[str], reference: np.ndarray) -> float:
    """Hypervolume dominated by these points and bounded by the reference point."""
    if not values:
        return 0.0
    losses = _losses(np.array(values, dtype=float), directions)
    inside = losses[(losses < reference).all(axis=1)]
    return float(compute_hypervolume(inside, reference)) if len(inside) else 0.0


def hypervolume_history(study: optuna.Study, info: StudyInfo) -> list[tuple[int, float]]:
    """(trial number, hypervolume of all trials completed up to it), in trial order."""
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    reference = reference_point(trials, info.directions)
    if reference is None:
        return []
    history, seen = [], []
    for trial in trials:
        seen.append(trial.values)
        history.append((trial.number, hypervolume(seen, info.directions, reference)))
    return history


def record(trial: FrozenTrial, info: StudyInfo, on_front: bool) -> dict[str, Any]:
    """One trial as the JSON a user or the service reads: weights, scores, and what it is."""
    return {
        "trial": trial.number,
        "baseline": is_baseline(trial),
        "baseline_name": trial.user_attrs.get("baseline"),
        "on_front": on_front,
        "relative": bool(trial.user_attrs.get("relative", False)),
        "weights": trial.user_attrs.get("weights", {}),
        "scores": trial.user_attrs.get("scores", {}),
    }


def front_records(study: optuna.Study, info: StudyInfo, *, include_all: bool = False) -> list[dict[str, Any]]:
    """The Pareto front (Optuna's own `best_trials`) and every baseline, in trial order."""
    front = {t.number for t in study.best_trials}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    keep = [t for t in complete if include_all or t.number in front or is_baseline(t)]
    return [record(t, info, t.number in front) for t in sorted(keep, key=lambda t: t.number)]


def front_table(records: list[dict[str, Any]], info: StudyInfo) -> pd.DataFrame:
    """A flat table: trial, kind, front membership, one column per weight and per task."""
    rows = []
    for r in records:
        row = {"trial": r["trial"], "kind": r["baseline_name"] or "merge", "front": "*" if r["on_front"] else ""}
        row.update({f"w:{name}": r["weights"].get(name, 0.0) for name in info.checkpoints})
        row.update({task: r["scores"].get(task) for task in info.objectives})
        row.update({f"{task} (held-out)": r["scores"].get(task) for task in info.held_out})
        rows.append(row)
    return pd.DataFrame(rows)


def most_balanced(records: list[dict[str, Any]], info: StudyInfo) -> dict[str, Any]:
    """The front member whose worst held-in objective (rank-normalized over the front) is best."""
    members = [r for r in records if r["on_front"]] or records
    values = np.array([[r["scores"][o] for o in info.objectives] for r in members], dtype=float)
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in info.directions])
    oriented = values * signs
    low, high = oriented.min(axis=0), oriented.max(axis=0)
    scaled = (oriented - low) / np.where(high > low, high - low, 1.0)
    return members[int(scaled.min(axis=1).argmax())]
