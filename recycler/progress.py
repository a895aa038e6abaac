"""The search's progress bar: trials finished against the budget, with the front's size and hypervolume.

The bar counts every driver's trials; the front is kept up one trial at a time (pareto.FrontTracker)
and measured anew only while the baselines that bound the hypervolume still move its reference point.
"""

from __future__ import annotations

import optuna

from recycler.front import reference_point
from recycler.ledger import examples_spent, finished_trials
from recycler.pareto import FrontTracker
from recycler.records import stored_trials
from recycler.study import StudyInfo


class TrialsBar:
    """The trials bar, with the front's size and hypervolume, kept up one trial at a time."""

    def __init__(self, study: optuna.Study, info: StudyInfo, budget: int, enabled: bool, screening_on: bool) -> None:
        from tqdm import tqdm

        self.study, self.info, self.screening_on = study, info, screening_on
        self.bar = tqdm(total=budget, initial=finished_trials(study), desc="trials", disable=not enabled,
                        dynamic_ncols=True)
        self.tracker: FrontTracker | None = None

    def trial_finished(self, values: list[float] | None) -> None:
        """One more trial of this driver counts against the budget, with its objective values if it
        completed. The bar counts every driver's trials, and what screening saved of all of them."""
        self.bar.n = finished_trials(self.study)
        if values is not None:
            self._track(values)
        postfix = {}
        if self.tracker is not None:
            postfix = {"front": len(self.tracker.front), "hv": f"{self.tracker.hypervolume:.4g}"}
        spent = examples_spent(self.study) if self.screening_on else None
        if spent is not None:
            postfix["saved"] = f"{spent.saved / max(1, spent.saved + spent.scored):.0%} of examples"
        self.bar.set_postfix(postfix)

    def _track(self, values: list[float]) -> None:
        """Add the newest trial; measure every trial again only while the baselines that bound the
        hypervolume are still coming in and move its reference point."""
        reference = reference_point(self.study, self.info)
        if reference is None:
            return
        if self.tracker is None or not (self.tracker.reference == reference).all():
            self.tracker = FrontTracker(self.info.directions, reference)
            for trial in stored_trials(self.study, complete_only=True):
                self.tracker.add(trial.values)
        else:
            self.tracker.add(values)

    def close(self) -> None:
        self.bar.close()
