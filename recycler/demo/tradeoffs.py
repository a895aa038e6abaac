"""The trade-off table of a pool: every checkpoint, and the uniform average, on every task of its suite."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recycler.recipes import LinearRecipe
from recycler.spec import load_spec
from recycler.suite import load_suite
from recycler.workers import MergeWorker


def tradeoff_table(pool_yaml: Path) -> pd.DataFrame:
    """Rows: each checkpoint alone, the base if any, the uniform average; columns: the suite's tasks."""
    spec = load_spec(pool_yaml)
    worker = MergeWorker(spec)
    names = spec.checkpoint_names
    rows = {name: worker.evaluate(LinearRecipe({name: 1.0}).to_json()).scores for name in names}
    if spec.base is not None:
        rows[spec.base.name] = worker.evaluate(LinearRecipe({}, relative=True).to_json()).scores
    rows["uniform"] = worker.evaluate(LinearRecipe({name: 1.0 / len(names) for name in names}).to_json()).scores
    suite = load_suite(spec.suite)
    columns = suite.held_in + [f"{task} (held-out)" for task in suite.held_out]
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = [c if c in suite.held_in else f"{c} (held-out)" for c in table.columns]
    return table[columns]


def tradeoff_report(table: pd.DataFrame, held_in: list[str], checkpoints: list[str]) -> list[str]:
    """The three facts that make a pool worth merging, each checked and stated."""
    singles = table.loc[checkpoints, held_in]
    best_everywhere = [n for n in checkpoints if (singles.loc[n] >= singles.max()).all()]
    never_beaten = [n for n in checkpoints if not (singles.drop(index=n) > singles.loc[n]).any().any()]
    uniform_best = bool((table.loc["uniform", held_in] >= singles.max()).all())
    return [
        f"no checkpoint is best on every held-in task: {not best_everywhere}" + (f" ({', '.join(best_everywhere)})" if best_everywhere else ""),
        f"each checkpoint is beaten on some held-in task by another: {not never_beaten}" + (f" (not: {', '.join(never_beaten)})" if never_beaten else ""),
        f"the uniform average is not the best on every held-in task: {not uniform_best}",
    ]


def print_tradeoff_table(pool_yaml: Path) -> None:
    spec = load_spec(pool_yaml)
    suite = load_suite(spec.suite)
    table = tradeoff_table(pool_yaml)
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    for line in tradeoff_report(table, suite.held_in, spec.checkpoint_names):
        print(line)
