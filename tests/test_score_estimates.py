"""The history estimator of full scores from a screening subset, against scikit-learn's ridge
regression and its leave-one-out cross-validation (references nobody here wrote), and in
screening's drop rule."""

import math

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import LeaveOneOut, cross_val_predict

from recycler.score_estimates import fit_estimator
from recycler.screening import FrontMember, Screening


def history(trials: int, items: int, seed: int = 0):
    """Trials of a pool whose merges answer alike: each trial's skill decides which items it gets
    right, the full score is its mean over 200 items of which the subset's 20 are the first."""
    rng = np.random.default_rng(seed)
    skill = rng.uniform(0.2, 0.9, size=trials)
    difficulty = rng.uniform(0, 1, size=200)
    answers = (skill[:, None] > difficulty[None, :] + rng.normal(0, 0.1, size=(trials, 200))).astype(float)
    return answers[:, :items], answers.mean(axis=1)


def test_weights_and_leave_one_out_error_are_scikit_learns_ridge():
    x, y = history(40, 20)
    estimator = fit_estimator(x.tolist(), y.tolist())
    reference = Ridge(alpha=estimator.ridge).fit(x, y)
    np.testing.assert_allclose(estimator.weights, reference.coef_, atol=1e-9)
    candidate = x[0] * 0.5
    assert estimator.estimate(candidate) == pytest.approx(reference.predict(candidate[None, :])[0], abs=1e-9)
    left_out = cross_val_predict(Ridge(alpha=estimator.ridge), x, y, cv=LeaveOneOut())
    assert estimator.error == pytest.approx(math.sqrt(np.mean((y - left_out) ** 2)), rel=1e-9)
    for ridge in (estimator.ridge * 0.1, estimator.ridge * 10):  # the chosen strength has the smallest such error
        other = cross_val_predict(Ridge(alpha=ridge), x, y, cv=LeaveOneOut())
        assert math.sqrt(np.mean((y - other) ** 2)) >= estimator.error - 1e-12


def test_leverage_grows_for_a_candidate_unlike_the_history():
    x, y = history(30, 40)  # more items than trials: the fit has directions the trials never varied in
    estimator = fit_estimator(x.tolist(), y.tolist())
    centred = x - x.mean(axis=0)
    direct = lambda v: 1 / 30 + (v - x.mean(axis=0)) @ np.linalg.solve(  # noqa: E731
        centred.T @ centred + estimator.ridge * np.eye(40), v - x.mean(axis=0))
    unlike = np.where(x.mean(axis=0) > 0.5, 0.0, 1.0)  # the opposite of the usual answer on every item
    assert estimator.leverage(x.mean(axis=0)) == pytest.approx(1 / 30)
    assert estimator.leverage(x[3]) == pytest.approx(direct(x[3]), rel=1e-9)
    assert estimator.leverage(unlike) == pytest.approx(direct(unlike), rel=1e-9)
    assert estimator.half_width(unlike, 1.28) > estimator.half_width(x[3], 1.28)


def test_the_history_bounds_a_candidate_where_its_interval_is_the_tighter():
    x, y = history(40, 20, seed=1)
    subset = list(range(20))
    screening = Screening([{"t": subset}], {"t": 200}, 0.9, frozenset({"t"}), history_after=20)
    past = [FrontMember(n, [float(y[n])], {"t": x[n].tolist()}) for n in range(40)]
    best = max(past, key=lambda m: m.values[0])
    weak = {"t": x[int(np.argmin(y))].tolist()}
    plain, _ = screening.optimistic(weak, best, ["t"], ["maximize"])
    estimators = screening.estimators(past, ["t"], stage=0)
    tight, by_history = screening.optimistic(weak, best, ["t"], ["maximize"], estimators=estimators)
    fitted = estimators["t"]
    assert by_history == ("t",) and tight[0] != plain[0]
    assert tight[0] == pytest.approx(fitted.estimate(weak["t"]) + fitted.half_width(weak["t"], 1.2815515655446004))
    assert min(y) <= tight[0] < best.values[0]  # an optimistic bound on the weakest trial's true score, below the best's
    assert screening.estimators(past[:19], ["t"], stage=0) == {}  # too little history: the paired bound alone
    verdict = screening.verdict(weak, [best], ["t"], ["maximize"], history=past)
    assert not verdict.finish and verdict.by_history == ("t",)


def test_a_history_too_short_to_leave_one_out_is_refused():
    with pytest.raises(ValueError, match="at least 3 trials"):
        fit_estimator([[1.0], [0.0]], [0.5, 0.4])


def test_a_task_the_history_never_varied_on_is_left_to_the_paired_bound():
    """Every trial so far scored 0 on every example: the first candidate to get some right must not
    be estimated at 0 with no error."""
    screening = Screening([{"t": list(range(10))}], {"t": 100}, 0.9, frozenset({"t"}), history_after=20)
    past = [FrontMember(n, [0.0], {"t": [0.0] * 10}) for n in range(25)]
    assert fit_estimator([p.subset_scores["t"] for p in past], [0.0] * 25).error == 0
    assert screening.estimators(past, ["t"], stage=0) == {}
    learner = {"t": [1.0] * 5 + [0.0] * 5}
    assert screening.verdict(learner, past[:1], ["t"], ["maximize"], history=past).finish
