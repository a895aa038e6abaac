"""The Pareto front of a study, with the baselines beside it, as records, tables and hypervolume.

Baselines are trials (those the search space can express) or entries of the study's user
attributes (the merge methods scored beside the search); records treat both alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pandas as pd

from recycler.baselines import reference_labels
from recycler.pareto import FrontTracker, dominates, losses
from recycler.recipes import recipe_from_json
from recycler.records import FrontDocument, FrontEntry, side_baselines, stored_trials
from recycler.study import StudyInfo


def reference_point(study: optuna.Study, info: StudyInfo) -> np.ndarray | None:
    """The worst value per objective (as a loss) of the checkpoints alone and their average:
    hypervolume then measures what the search gained over them, in the objectives' own units."""
    labels = reference_labels(info.checkpoints)
    values = [t.values for t in stored_trials(study, complete_only=True) if t.baseline in labels]
    values += [[b.scores[o] for o in info.objectives] for b in side_baselines(study).values()
               if b.label in labels and b.scores is not None]
    if not values:
        return None
    return losses(np.array(values, dtype=float), info.directions).max(axis=0)


def hypervolume_history(study: optuna.Study, info: StudyInfo) -> list[tuple[int, float]]:
    """(trial number, hypervolume of all trials completed up to it), in trial order."""
    reference = reference_point(study, info)
    if reference is None:
        return []
    tracker = FrontTracker(info.directions, reference)
    trials = sorted(stored_trials(study, complete_only=True), key=lambda t: t.number)
    return [(trial.number, tracker.add(trial.values)) for trial in trials]


def _entry(trial: int | None, label: str | None, recipe: dict[str, Any], scores: dict[str, float], on_front: bool,
           screened_out: bool = False, dominated_by: int | None = None, dropped_at_stage: int | None = None) -> FrontEntry:
    merge = recipe_from_json(recipe)
    return FrontEntry(trial=trial, baseline=label is not None, baseline_name=label, on_front=on_front,
                      screened_out=screened_out, dominated_by=dominated_by, dropped_at_stage=dropped_at_stage,
                      beaten_by_front=None, method=merge.method,
                      settings=merge.describe(), weights=merge.checkpoint_weights(), scores=scores, recipe=recipe)


def front_records(study: optuna.Study, info: StudyInfo, *, include_all: bool = False) -> list[FrontEntry]:
    """The Pareto front (Optuna's own `best_trials`), every baseline trial in trial order, then the
    baselines scored beside the search (trial None). A baseline's `beaten_by_front` says whether a
    front member dominates it. `include_all` adds every completed trial, and the trials dropped at
    screening with their subset's scores (`screened_out`), the trial that dominated them and the stage."""
    front = study.best_trials
    numbers = {t.number for t in front}
    trials = stored_trials(study)
    keep = [t for t in trials if t.complete and (include_all or t.number in numbers or t.baseline is not None)]
    keep += [t for t in trials if include_all and t.screened_out]
    records = [_entry(t.number, t.baseline, t.recipe, t.scores if t.complete else t.screening.scores, t.number in numbers,
                      screened_out=t.screened_out, dominated_by=t.screening.dominated_by if t.screened_out else None,
                      dropped_at_stage=t.screening.stage + 1 if t.screened_out else None)
               for t in sorted(keep, key=lambda t: t.number)]
    records += [_entry(None, b.label, b.recipe, b.scores, False) for b in side_baselines(study).values() if b.scores is not None]
    for r in records:
        values = [r["scores"][o] for o in info.objectives]
        r["beaten_by_front"] = any(dominates(t.values, values, info.directions) for t in front) if r["baseline"] else None
    return records


def front_document(info: StudyInfo, records: list[FrontEntry]) -> FrontDocument:
    return FrontDocument(study=info.name, objectives=info.objectives, held_out=info.held_out, trials=records)


TOP_WEIGHTS = 3  # checkpoints named per row in the compact table


def _top_weights(weights: dict[str, float]) -> str:
    largest = sorted(weights.items(), key=lambda item: -abs(item[1]))[:TOP_WEIGHTS]
    return " ".join(f"{name} {value:.2f}" for name, value in largest if value != 0.0)


def front_table(records: list[FrontEntry], info: StudyInfo, *, wide: bool = False) -> pd.DataFrame:
    """One row per record: trial, kind, method, front membership (or 'beaten' for a baseline a front
    member dominates, '< N' for a candidate trial N dominated at screening), one column per task
    (held-out ones marked 'ho:'), and the weights: the largest three in one column, or (wide) one
    column per checkpoint and the method's settings."""
    rows = []
    for r in records:
        kind = r["baseline_name"] or ("screened out" if r.get("screened_out") else "merge")
        row = {"trial": "-" if r["trial"] is None else r["trial"], "kind": kind, "method": r["method"],
               "front": "*" if r["on_front"] else _not_on_front(r)}
        if wide:
            row.update({f"w:{name}": r["weights"].get(name, 0.0) for name in info.checkpoints})
            row["settings"] = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["settings"].items())
        row.update({task: r["scores"].get(task) for task in info.objectives})
        row.update({f"ho:{task}" if not wide else f"{task} (held-out)": r["scores"].get(task) for task in info.held_out})
        if not wide:
            row["top weights"] = _top_weights(r["weights"])
        rows.append(row)
    return pd.DataFrame(rows)


def _not_on_front(r: FrontEntry) -> str:
    if r.get("beaten_by_front"):
        return "beaten"
    return f"< {r['dominated_by']}" if r.get("dominated_by") is not None else ""
