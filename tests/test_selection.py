"""Narrowing a front: constraints, preferences, limits; and the front's own rules (dominance,
hypervolume, the most balanced member) on hand-made records."""

import numpy as np
import pytest

from recycler.errors import RecyclerError
from recycler.pareto import dominates, hypervolume
from recycler.selection import most_balanced, parse_constraint, parse_preference, rank, select
from recycler.study import StudyInfo

INFO = StudyInfo(name="s", fingerprint="f", spec={"checkpoints": [{"name": "a"}, {"name": "b"}]},
                 objectives=["add", "loss"], directions=["maximize", "minimize"], held_out=["chain"], storage=None)


def record(trial, add, loss, chain=0.0, on_front=True, baseline=None):
    return {"trial": trial, "on_front": on_front, "baseline": baseline is not None, "baseline_name": baseline,
            "scores": {"add": add, "loss": loss, "chain": chain}, "weights": {"a": 0.5, "b": 0.5}}


FRONT = [record(0, 0.9, 3.0), record(1, 0.5, 1.0, chain=0.7), record(2, 0.7, 2.0, chain=0.2),
         record(3, 0.2, 5.0, on_front=False, baseline="a")]


def test_constraints_filter_front_members_only():
    assert [r["trial"] for r in select(FRONT, INFO, where=["add>=0.6"])] == [0, 2]
    assert [r["trial"] for r in select(FRONT, INFO, where=["add>=0.6", "loss<2.5"])] == [2]
    assert [r["trial"] for r in select(FRONT, INFO, where=["chain>0.5"])] == [1]  # held-out tasks too
    assert select(FRONT, INFO, where=["add>0.95"]) == []


def test_preferences_rank_and_limit():
    assert [r["trial"] for r in select(FRONT, INFO, preference="add=1")] == [0, 2, 1]
    assert [r["trial"] for r in select(FRONT, INFO, preference="loss=1")] == [1, 2, 0]  # lower loss is better
    assert [r["trial"] for r in select(FRONT, INFO, preference="balanced", limit=1)] == [2]
    assert most_balanced(FRONT, INFO)["trial"] == 2


@pytest.mark.parametrize("text, message", [
    ("add=>1", "expected TASK OP NUMBER"), ("poetry>=1", "unknown task 'poetry'"), ("add>=x", "expected TASK OP NUMBER"),
])
def test_bad_constraints_are_one_line_errors(text, message):
    with pytest.raises(RecyclerError, match=message):
        parse_constraint(text, ["add", "loss", "chain"])


@pytest.mark.parametrize("text, message", [("chain=1", "expected 'balanced'"), ("add=lots", "'lots' is not a number")])
def test_bad_preferences_are_one_line_errors(text, message):
    with pytest.raises(RecyclerError, match=message):
        parse_preference(text, INFO.objectives)


def test_dominance_and_hypervolume():
    directions = ["maximize", "minimize"]
    assert dominates([0.9, 1.0], [0.8, 1.0], directions) and not dominates([0.9, 1.0], [0.9, 1.0], directions)
    assert not dominates([0.9, 2.0], [0.8, 1.0], directions)
    # Two points against the reference (loss space: -add, loss) = (0, 4): boxes of 0.5·3 and 0.9·1, overlap 0.5·1.
    assert hypervolume([[0.5, 1.0], [0.9, 3.0]], directions, np.array([0.0, 4.0])) == pytest.approx(1.5 + 0.9 - 0.5)
    assert hypervolume([[-0.1, 1.0]], directions, np.array([0.0, 4.0])) == 0.0  # outside the reference box


def test_rank_of_nothing_is_nothing():
    assert rank([], INFO, None) == []
