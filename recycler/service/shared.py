"""Studies in the service's database that `recycler run` started on other machines.

They are registered here as `elsewhere`, each with a study folder that holds only its study.json
(pointing at the database), so the read routes (summary, front, trials, plots, the page) serve them
as they serve the service's own. Their per-example answers stay in the folder of the machine that
ran them. The service does not run, cancel or resume them: their drivers do.
"""

from __future__ import annotations

import json
import logging

import optuna

from recycler.coordination import database_storage
from recycler.records import study_description
from recycler.service.store import Store
from recycler.study import StudyInfo, write_info

log = logging.getLogger("recycler.service")


def register_elsewhere(store: Store, storage: str) -> None:
    """Register every recycler study in the database that the service does not know by name."""
    for summary in optuna.get_all_study_summaries(database_storage(storage, None), include_best_trial=False):
        description = study_description(summary.user_attrs)
        if description is None:  # not a recycler study, or a study's queue of side baselines
            continue
        try:
            info = StudyInfo.described(description, storage)
            budget = int(info.spec["search"]["trials"])
        except (TypeError, KeyError, ValueError):  # written by another version of recycler: not listed
            log.warning("study '%s' in the database has a description this recycler cannot read", summary.study_name)
            continue
        row = store.add_elsewhere(info.name, json.dumps(info.spec), budget)
        if row is not None:
            write_info(store.study_folder(row.id), info)
