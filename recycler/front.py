"""The Pareto front of a study, with the baselines beside it, as records, tables and hypervolume.

Baselines are trials (those the search space can express) or entries of the study's user
attributes (the merge methods scored beside the search); records treat both alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna._hypervolume import compute_hypervolume  # Optuna's own WFG implementation
from optuna.trial import FrozenTrial, TrialState

from recycler.baselines import reference_labels
from recycler.recipes import LinearRecipe, recipe_from_json
from recycler.selection import rank
from recycler.study import StudyInfo

# Study user attribute holding a baseline scored beside the trials, by label.
BASELINE_ATTR = "baseline:{}"


def is_baseline(trial: FrozenTrial) -> bool:
    return "baseline" in trial.user_attrs


def _losses(values: np.ndarray, directions: list[str]) -> np.ndarray:
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return values * signs


def trial_recipe(trial: FrozenTrial) -> dict[str, Any]:
    """The recipe a trial recorded; studies written before recipes were recorded hold linear weights."""
    if "recipe" in trial.user_attrs:
        return trial.user_attrs["recipe"]
    return LinearRecipe(trial.user_attrs["weights"], relative=trial.user_attrs.get("relative", False)).to_json()


def side_baselines(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """Baselines scored beside the trials, by label: recipe, and scores or error."""
    prefix = BASELINE_ATTR.format("")
    return {key[len(prefix):]: value for key, value in study.user_attrs.items() if key.startswith(prefix)}


def reference_point(study: optuna.Study, info: StudyInfo) -> np.ndarray | None:
    """The worst value per objective (as a loss) of the checkpoints alone and their average:
    hypervolume then measures what the search gained over them, in the objectives' own units."""
    labels = reference_labels(info.checkpoints)
    values = [t.values for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.user_attrs.get("baseline") in labels]
    values += [[b["scores"][o] for o in info.objectives] for label, b in side_baselines(study).items()
               if label in labels and "scores" in b]
    if not values:
        return None
    return _losses(np.array(values, dtype=float), info.directions).max(axis=0)


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
    reference = reference_point(study, info)
    if reference is None:
        return []
    history, seen = [], []
    for trial in trials:
        seen.append(trial.values)
        history.append((trial.number, hypervolume(seen, info.directions, reference)))
    return history


def dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    """a is at least as good as b on every objective and differs on one."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    better = [x * s >= y * s for x, y, s in zip(a, b, signs)]
    return all(better) and any(x != y for x, y in zip(a, b))


def _record(trial: int | None, label: str | None, recipe: dict[str, Any], scores: dict[str, float], on_front: bool) -> dict[str, Any]:
    merge = recipe_from_json(recipe)
    return {
        "trial": trial,
        "baseline": label is not None,
        "baseline_name": label,
        "on_front": on_front,
        "method": merge.method,
        "settings": merge.describe(),
        "weights": merge.checkpoint_weights(),
        "scores": scores,
        "recipe": recipe,
    }


def front_records(study: optuna.Study, info: StudyInfo, *, include_all: bool = False) -> list[dict[str, Any]]:
    """The Pareto front (Optuna's own `best_trials`), every baseline trial in trial order, then the
    baselines scored beside the search (trial None). A baseline's `beaten_by_front` says whether a
    front member dominates it."""
    front = study.best_trials
    numbers = {t.number for t in front}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    keep = [t for t in complete if include_all or t.number in numbers or is_baseline(t)]
    records = [_record(t.number, t.user_attrs.get("baseline"), trial_recipe(t), t.user_attrs["scores"], t.number in numbers)
               for t in sorted(keep, key=lambda t: t.number)]
    records += [_record(None, label, b["recipe"], b["scores"], False) for label, b in side_baselines(study).items() if "scores" in b]
    for r in records:
        values = [r["scores"][o] for o in info.objectives]
        r["beaten_by_front"] = any(dominates(t.values, values, info.directions) for t in front) if r["baseline"] else None
    return records


TOP_WEIGHTS = 3  # checkpoints named per row in the compact table


def _top_weights(weights: dict[str, float]) -> str:
    largest = sorted(weights.items(), key=lambda item: -abs(item[1]))[:TOP_WEIGHTS]
    return " ".join(f"{name} {value:.2f}" for name, value in largest if value != 0.0)


def front_table(records: list[dict[str, Any]], info: StudyInfo, *, wide: bool = False) -> pd.DataFrame:
    """One row per record: trial, kind, method, front membership (or 'beaten' for a baseline a front
    member dominates), one column per task (held-out ones marked 'ho:'), and the weights: the
    largest three in one column, or (wide) one column per checkpoint and the method's settings."""
    rows = []
    for r in records:
        row = {"trial": "-" if r["trial"] is None else r["trial"], "kind": r["baseline_name"] or "merge", "method": r["method"],
               "front": "*" if r["on_front"] else ("beaten" if r.get("beaten_by_front") else "")}
        if wide:
            row.update({f"w:{name}": r["weights"].get(name, 0.0) for name in info.checkpoints})
            row["settings"] = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["settings"].items())
        row.update({task: r["scores"].get(task) for task in info.objectives})
        row.update({f"ho:{task}" if not wide else f"{task} (held-out)": r["scores"].get(task) for task in info.held_out})
        if not wide:
            row["top weights"] = _top_weights(r["weights"])
        rows.append(row)
    return pd.DataFrame(rows)


def most_balanced(records: list[dict[str, Any]], info: StudyInfo) -> dict[str, Any]:
    """The front member whose worst held-in objective (min-max normalized over the front) is best."""
    return rank([r for r in records if r["on_front"]] or records, info, None)[0]
