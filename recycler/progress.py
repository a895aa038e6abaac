"""The search's progress bar: trials finished against the budget, with the front's size and hypervolume.

The bar counts every driver's trials; the front is kept up one trial at a time (pareto.FrontTracker)
and measured anew only while the baselines that bound the hypervolume still move its reference point.
"""

from __future__ import annotations

import optuna

from recycler.front import reference_point
from recycler.ledger import finished_trials
from recycler.pareto import FrontTracker
from recycler.records import stored_trials
from recycler.screening import Screening
from recycler.study import StudyInfo


class TrialsBar:
    """The trials bar, with the front's size and hypervolume, kept up one trial at a time."""

    def __init__(self, study: optuna.Study, info: StudyInfo, budget: int, enabled: bool, screening: Screening | None) -> None:
        from tqdm import tqdm

        self.study, self.info = study, info
        self.bar = tqdm(total=budget, initial=finished_trials(study), desc="trials", disable=not enabled,
                        dynamic_ncols=True)
        self.tracker: FrontTracker | None = None
        self.full_cost = screening.examples if screening is not None else None
        self.scored = sum(t.examples_scored or 0 for t in stored_trials(study))
        self.saved = sum(self.full_cost - t.examples_scored for t in stored_trials(study) if t.screened_out) if screening else 0

    def trial_finished(self, values: list[float] | None, examples_scored: int = 0) -> None:
        """One more trial of this driver counts against the budget: with its objective values if it
        completed, and the examples it scored. The bar counts every driver's trials."""
        self.bar.n = finished_trials(self.study)
        self.scored += examples_scored
        if self.full_cost is not None and values is None and examples_scored:
            self.saved += self.full_cost - examples_scored
        if values is not None:
            self._track(values)
        postfix = {}
        if self.tracker is not None:
            postfix = {"front": len(self.tracker.front), "hv": f"{self.tracker.hypervolume:.4g}"}
        if self.full_cost is not None:
            postfix["saved"] = f"{self.saved / max(1, self.saved + self.scored):.0%} of examples"
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
