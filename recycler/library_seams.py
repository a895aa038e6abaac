"""The private APIs of lm-eval and Optuna that recycler relies on, one thin wrapper each.

Neither library offers a public equivalent (checked against lm-eval 0.4.12, 0.4.13 and its main
branch, and Optuna 4.4 to 5.0 and its main branch). tests/test_library_seams.py pins each one on a
small known case, so an upgrade that moves or changes one fails there, by name, and only this
module needs to follow it. Each imports its library when called, so a moved API breaks only its
own callers. (The scorer's override of HFLM's `_encode_pair` has its own guard test.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_task_yaml(path: Path) -> dict[str, Any]:
    """An lm-eval task YAML read exactly as lm-eval reads it: `include:` files merged in (the
    including file's keys win) and each `!function module.name` imported, from a module next to
    the YAML first.

    Private: `lm_eval.tasks._yaml_loader.load_yaml`. Public `lm_eval.utils.load_yaml_config` went
    away in 0.4.12, and `TaskManager` builds Task objects straight from a file, leaving no point at
    which a suite can make relative `data_files` absolute before the data is loaded.
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=True, recursive=True)


def apply_filters_to(task: Any, instances: list[Any]) -> None:
    """Run an lm-eval task's filters over some of its instances only (those a screening stage
    scored), as `Task.apply_filters` runs them over all of them.

    Private: a task's `_filters` (its FilterEnsembles). The public `apply_filters` filters every
    instance the task built, and a filter such as `take_first` fails on one that was not run;
    building the requests of a subset instead would draw other few-shot examples than full
    evaluation draws, so its scores would not add up to full evaluation's.
    """
    for ensemble in getattr(task, "_filters", []):
        ensemble.apply(instances)


def compute_hypervolume(loss_vals: np.ndarray, reference_point: np.ndarray) -> float:
    """The volume dominated by the points (rows, every objective a loss) and bounded by the
    reference point; every point must be <= the reference in every objective.

    Private: `optuna._hypervolume.compute_hypervolume` (exact; WFG from 3 objectives up). Optuna's
    only public hypervolume is `plot_hypervolume_history`, a figure of a whole study.
    """
    from optuna._hypervolume import compute_hypervolume as optuna_hypervolume

    return float(optuna_hypervolume(loss_vals, reference_point))


def sandbox_task_templates() -> None:
    """Render lm-eval's prompt templates (`doc_to_text`, `doc_to_target`, ...) in Jinja's sandbox,
    which refuses the underscore attributes and unsafe calls a crafted template would reach Python
    through; ordinary templates render the same. Called in every process that builds tasks.

    Private in effect: lm-eval renders through the module-level `lm_eval.utils.env`, a plain
    `jinja2.Environment`, and offers no setting for it.
    """
    import lm_eval.utils
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    if isinstance(lm_eval.utils.env, SandboxedEnvironment):
        return
    sandboxed = SandboxedEnvironment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    sandboxed.filters.update(lm_eval.utils.env.filters)
    lm_eval.utils.env = sandboxed
