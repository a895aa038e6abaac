"""The front's own rules: dominance, hypervolume (against hand-computed values and exact grid
counts), the reference point and hypervolume history of a real in-memory Optuna study, the front's
records and table, and its most balanced member."""

import itertools

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from recycler.front import front_records, front_table, hypervolume_history, reference_point
from recycler.pareto import FrontTracker, dominates, hypervolume
from recycler.selection import most_balanced
from recycler.recipes import LinearRecipe, MergeRecipe, SlerpRecipe, TaskVectorRecipe
from recycler.study import StudyInfo

MAX = ["maximize", "maximize"]
MIN = ["minimize", "minimize"]
MIXED = ["maximize", "minimize"]


def study_info(checkpoints: list[str]) -> StudyInfo:
    return StudyInfo(name="s", fingerprint="f", spec={"checkpoints": [{"name": n} for n in checkpoints]},
                     objectives=["add", "loss"], directions=MIXED, held_out=["chain"], storage=None)


INFO = study_info(["a", "b"])


# dominance


def test_better_on_one_objective_and_equal_on_the_other_dominates():
    assert dominates([2, 1], [1, 1], MAX) and not dominates([1, 1], [2, 1], MAX)


def test_equal_points_do_not_dominate_each_other():
    for directions in (MAX, MIN, MIXED):
        assert not dominates([1.0, 2.0], [1.0, 2.0], directions)


def test_a_trade_off_dominates_neither_way():
    assert not dominates([2, 0], [0, 2], MAX) and not dominates([0, 2], [2, 0], MAX)


def test_minimized_objectives_prefer_lower_values():
    assert dominates([0, 1], [1, 1], MIN) and not dominates([1, 1], [0, 1], MIN)
    assert dominates([0.9, 1.0], [0.8, 1.5], MIXED) and not dominates([0.9, 2.0], [0.8, 1.5], MIXED)


def test_dominance_is_a_strict_order_and_flips_with_the_direction():
    rng = np.random.default_rng(0)
    points = rng.integers(0, 3, size=(25, 3)).tolist()
    directions = ["maximize", "minimize", "maximize"]
    flipped = ["minimize", "maximize", "minimize"]
    for a, b in itertools.product(points, repeat=2):
        assert not (dominates(a, b, directions) and dominates(b, a, directions))
        assert dominates(a, b, directions) == dominates([-x for x in a], [-x for x in b], flipped)
    for a, b, c in itertools.product(points[:12], repeat=3):
        if dominates(a, b, directions) and dominates(b, c, directions):
            assert dominates(a, c, directions)


# hypervolume

STAIRCASE = [[1, 3], [2, 2], [3, 1]]  # against (4, 4), minimized: strips of 1·1, 1·2 and 1·3


def test_hypervolume_of_a_2d_staircase():
    assert hypervolume(STAIRCASE, MIN, np.array([4.0, 4.0])) == pytest.approx(6.0)
    maximized = [[-x, -y] for x, y in STAIRCASE]  # the reference is a point in loss space: −value when maximized
    assert hypervolume(maximized, MAX, np.array([4.0, 4.0])) == pytest.approx(6.0)


def test_dominated_and_repeated_points_add_nothing():
    assert hypervolume([*STAIRCASE, [3, 3], [2, 2]], MIN, np.array([4.0, 4.0])) == pytest.approx(6.0)


def test_hypervolume_of_3d_boxes():
    assert hypervolume([[1, 1, 1]], ["minimize"] * 3, np.array([2.0, 3.0, 4.0])) == pytest.approx(1 * 2 * 3)
    # boxes of 2·2·1 and 1·1·2 overlapping in 1·1·1
    assert hypervolume([[0, 0, 1], [1, 1, 0]], ["minimize"] * 3, np.array([2.0, 2.0, 2.0])) == pytest.approx(4 + 2 - 1)
    # three boxes of 2, each pair and all three overlapping in the same unit cube
    assert hypervolume([[0, 1, 1], [1, 0, 1], [1, 1, 0]], ["minimize"] * 3, np.array([2.0, 2.0, 2.0])) == pytest.approx(6 - 3 + 1)


def test_points_outside_the_reference_are_ignored():
    reference = np.array([4.0, 4.0])
    beyond = [[5, 0], [0, 4], [4, 4]]  # past the reference on x, and on its boundary
    assert hypervolume([*STAIRCASE, *beyond], MIN, reference) == pytest.approx(6.0)
    assert hypervolume(beyond, MIN, reference) == 0.0
    assert hypervolume([], MIN, reference) == 0.0


def grid_count(losses: np.ndarray, size: int) -> int:
    """Unit cells of [0, size)^d whose lower corner some point is at or below on every axis: the
    exact hypervolume of integer points against the reference (size, ..., size)."""
    dims = losses.shape[1]
    corners = np.stack(np.meshgrid(*[np.arange(size)] * dims, indexing="ij"), axis=-1).reshape(-1, dims)
    return int((losses[None, :, :] <= corners[:, None, :]).all(axis=2).any(axis=1).sum())


@pytest.mark.parametrize("dims", [2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hypervolume_equals_a_grid_count(dims, seed):
    rng = np.random.default_rng(seed)
    size = 8
    losses = rng.integers(0, size + 3, size=(12, dims))  # some points lie past the reference
    directions = rng.choice(["maximize", "minimize"], size=dims).tolist()
    values = losses * np.array([-1 if d == "maximize" else 1 for d in directions])
    expected = grid_count(losses, size)
    assert expected > 0
    assert hypervolume(values.tolist(), directions, np.full(dims, float(size))) == pytest.approx(expected)


# a study's reference point, history and records


def add_trial(study: optuna.Study, recipe: MergeRecipe, add: float, loss: float, baseline: str | None = None) -> None:
    attrs = {"recipe": recipe.to_json(), "scores": {"add": add, "loss": loss, "chain": 0.5}}
    if baseline is not None:
        attrs["baseline"] = baseline
    study.add_trial(optuna.trial.create_trial(values=[add, loss], user_attrs=attrs))


def add_side_baseline(study: optuna.Study, label: str, recipe: MergeRecipe, add: float | None, loss: float | None = None) -> None:
    """A baseline the space cannot express, scored beside the trials (or failed, without scores)."""
    entry = {"recipe": recipe.to_json()}
    entry.update({"scores": {"add": add, "loss": loss, "chain": 0.5}} if add is not None else {"error": "worker died"})
    study.set_user_attr(f"baseline:{label}", entry)


A, B, UNIFORM = LinearRecipe({"a": 1.0, "b": 0.0}), LinearRecipe({"a": 0.0, "b": 1.0}), LinearRecipe({"a": 0.5, "b": 0.5})
TIES = TaskVectorRecipe({"a": 1.0, "b": 1.0}, "magnitude", True, density=0.2)


@pytest.fixture
def study() -> optuna.Study:
    """Baselines a, b and uniform, a slerp baseline, a failed trial and three merges: m1 (3) and
    m3 (6) on the front with b; a, uniform and m2 (5) dominated. Ties scored beside the trials."""
    study = optuna.create_study(directions=MIXED)
    add_trial(study, A, 0.5, 2.0, baseline="a")
    add_trial(study, B, 0.3, 1.0, baseline="b")
    add_trial(study, UNIFORM, 0.6, 3.0, baseline="uniform")
    add_trial(study, LinearRecipe({"a": 0.7, "b": 0.3}), 0.7, 1.5)
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"error": "boom"}))
    add_trial(study, LinearRecipe({"a": 0.2, "b": 0.8}), 0.4, 2.5)
    add_trial(study, LinearRecipe({"a": 0.9, "b": 0.1}), 0.8, 2.0)
    add_trial(study, SlerpRecipe("a", "b", 0.5), 0.1, 9.0, baseline="slerp")
    add_side_baseline(study, "ties", TIES, 0.75, 1.4)
    add_side_baseline(study, "dare_ties", TIES, None)
    return study


def test_the_reference_is_the_worst_of_the_checkpoints_alone_and_their_average(study):
    # losses: −add and loss; the slerp baseline and the merges, worse still, do not count
    assert reference_point(study, INFO) == pytest.approx([-0.3, 3.0])


def test_checkpoints_scored_beside_the_search_make_the_reference_too():
    study = optuna.create_study(directions=MIXED)
    add_side_baseline(study, "a", A, 0.5, 2.0)
    add_side_baseline(study, "b", B, 0.4, 1.0)
    add_side_baseline(study, "uniform", UNIFORM, None)  # failed: no scores
    add_side_baseline(study, "ties", TIES, 0.1, 5.0)
    assert reference_point(study, INFO) == pytest.approx([-0.4, 2.0])


def test_no_reference_without_the_checkpoint_baselines():
    study = optuna.create_study(directions=MIXED)
    add_trial(study, LinearRecipe({"a": 0.7, "b": 0.3}), 0.7, 1.5)
    assert reference_point(study, INFO) is None
    assert hypervolume_history(study, INFO) == []


def test_hypervolume_history_follows_the_completed_trials(study):
    # Against the reference (−0.3, 3): a's box 0.2·1; b and uniform lie on its boundary; m1 covers
    # 0.4·1.5 (a's box inside); m2 is dominated; m3 adds 0.5·1 less the 0.4·1 it shares with m1.
    history = hypervolume_history(study, INFO)
    assert [number for number, _ in history] == [0, 1, 2, 3, 5, 6, 7]
    assert [volume for _, volume in history] == pytest.approx([0.2, 0.2, 0.2, 0.6, 0.6, 0.7, 0.7])
    values = [t.values for t in study.trials if t.state == TrialState.COMPLETE]
    assert history[-1][1] == pytest.approx(hypervolume(values, MIXED, reference_point(study, INFO)))


def test_front_records_hold_the_front_and_every_baseline(study):
    records = front_records(study, INFO)
    rows = [(r["trial"], r["baseline_name"], r["on_front"], r["beaten_by_front"]) for r in records]
    assert rows == [
        (0, "a", False, True),  # m1 dominates it
        (1, "b", True, False),
        (2, "uniform", False, True),  # m3 dominates it
        (3, None, True, None),
        (6, None, True, None),
        (7, "slerp", False, True),
        (None, "ties", False, False),  # scored beside the search, and no front member beats it
    ]
    assert {r["trial"] for r in records if r["on_front"]} == {t.number for t in study.best_trials}
    ties = records[-1]
    assert ties["baseline"] and ties["method"] == "ties" and ties["recipe"] == TIES.to_json()
    assert ties["weights"] == {"a": 1.0, "b": 1.0} and ties["settings"] == {"density": 0.2, "lambda": 1.0}
    assert ties["scores"] == {"add": 0.75, "loss": 1.4, "chain": 0.5}


def test_front_records_of_every_trial(study):
    records = front_records(study, INFO, include_all=True)
    assert [r["trial"] for r in records] == [0, 1, 2, 3, 5, 6, 7, None]
    assert not records[4]["on_front"] and not records[4]["baseline"] and records[4]["weights"] == {"a": 0.2, "b": 0.8}


def test_a_trial_from_before_recipes_were_recorded_reads_as_a_linear_merge():
    study = optuna.create_study(directions=MIXED)
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0], user_attrs={"weights": {"a": 0.25, "b": 0.75},
                                                                             "scores": {"add": 0.5, "loss": 1.0, "chain": 0.0}}))
    (record,) = front_records(study, INFO)
    assert record["method"] == "linear" and record["recipe"] == LinearRecipe({"a": 0.25, "b": 0.75}).to_json()


# the table and the most balanced member


def entry(trial, recipe: MergeRecipe, add: float, loss: float, *, on_front=True, baseline=None, beaten=None) -> dict:
    return {"trial": trial, "baseline": baseline is not None, "baseline_name": baseline, "on_front": on_front,
            "beaten_by_front": beaten, "method": recipe.method, "settings": recipe.describe(),
            "weights": recipe.checkpoint_weights(), "scores": {"add": add, "loss": loss, "chain": 0.25}, "recipe": recipe.to_json()}


WIDE_INFO = study_info(["a", "b", "c", "d"])
TABLE = [
    entry(4, LinearRecipe({"a": 0.1, "b": -0.6, "c": 0.3, "d": 0.0}), 0.9, 1.0),
    entry(0, LinearRecipe({"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}), 0.5, 2.0, on_front=False, baseline="a", beaten=True),
    entry(None, TaskVectorRecipe({"a": 1.0, "c": 0.5}, "random", False, density=0.1), 0.7, 1.5, on_front=False, baseline="dare_linear", beaten=False),
]


def test_compact_table_columns_and_rows():
    table = front_table(TABLE, WIDE_INFO)
    assert list(table.columns) == ["trial", "kind", "method", "front", "add", "loss", "ho:chain", "top weights"]
    assert table["trial"].tolist() == [4, 0, "-"]
    assert table["kind"].tolist() == ["merge", "a", "dare_linear"]
    assert table["method"].tolist() == ["linear", "linear", "dare_linear"]
    assert table["front"].tolist() == ["*", "beaten", ""]
    assert table["add"].tolist() == [0.9, 0.5, 0.7] and table["ho:chain"].tolist() == [0.25] * 3
    assert table["top weights"].tolist() == ["b -0.60 c 0.30 a 0.10", "a 1.00", "a 1.00 c 0.50"]


def test_wide_table_has_every_weight_and_the_settings():
    table = front_table(TABLE, WIDE_INFO, wide=True)
    assert list(table.columns) == ["trial", "kind", "method", "front", "w:a", "w:b", "w:c", "w:d", "settings", "add", "loss",
                                   "chain (held-out)"]
    assert table[["w:a", "w:b", "w:c", "w:d"]].values.tolist()[0] == [0.1, -0.6, 0.3, 0.0]
    assert table["w:b"].tolist()[2] == 0.0  # a checkpoint the recipe leaves out
    assert table["settings"].tolist() == ["", "", "density=0.1 lambda=1 seed=0"]


BALANCED = [
    entry(0, A, 0.9, 3.0),  # best add, worst loss
    entry(1, A, 0.5, 1.0),  # worst add, best loss
    entry(2, A, 0.7, 2.5),  # normalized: add 0.5, loss 0.25
    entry(3, A, 0.65, 1.5),  # normalized: add 0.375, loss 0.75: the best worst objective
    entry(4, A, 0.85, 1.1, on_front=False, baseline="uniform"),  # better balanced, but not on the front
]


def test_most_balanced_is_the_front_member_with_the_best_worst_objective():
    assert most_balanced(BALANCED, INFO)["trial"] == 3
    assert most_balanced(BALANCED[:3], INFO)["trial"] == 2


def test_most_balanced_without_a_front_ranks_every_record():
    off_front = [{**r, "on_front": False} for r in BALANCED]
    assert most_balanced(off_front, INFO)["trial"] == 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_front_tracker_keeps_the_hypervolume_of_every_point_so_far(seed):
    rng = np.random.default_rng(seed)
    directions = ["maximize", "minimize", "maximize"]
    reference = np.array([0.0, 1.0, 0.0])  # as losses: the worst of each objective
    tracker = FrontTracker(directions, reference)
    seen = []
    for values in rng.random((40, 3)).round(1).tolist():  # rounded, so some points repeat
        seen.append(values)
        assert tracker.add(values) == pytest.approx(hypervolume(seen, directions, reference))
    assert len(tracker.front) == sum(not any(dominates(o, v, directions) for o in seen) for v in seen)
