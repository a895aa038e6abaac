"""Search spaces with real Optuna: every shipped space suggests recipes inside itself, expresses the
baselines it can as trial parameters that give the same recipe back, and bad space files are
refused in one line naming the file and the problem."""

import math
import re
from collections.abc import Mapping
from pathlib import Path

import optuna
import pytest
import yaml

from recycler.baselines import baseline_recipes
from recycler.errors import RecyclerError
from recycler.recipes import (
    LayerwiseRecipe,
    LinearRecipe,
    MergeRecipe,
    SlerpRecipe,
    TaskVectorRecipe,
)
from recycler.space import SPACES_DIR, load_space

CHECKPOINTS = ["c0", "c1", "c2"]
LAYERS = 5  # the shipped layer-wise space weighs blocks of 2 layers: 3 blocks
SHIPPED = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def new_study(seed: int = 0) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


def suggestions(space, count: int, seed: int = 0) -> list[tuple[optuna.Trial, MergeRecipe]]:
    study = new_study(seed)
    return [(trial, space.suggest(trial)) for trial in (study.ask() for _ in range(count))]


def replay(space, params: dict) -> MergeRecipe:
    """The recipe a trial started from these parameters (as the search enqueues a baseline) gives."""
    study = new_study()
    study.enqueue_trial(params)
    return space.suggest(study.ask())


def _flat(data, prefix: str = "") -> dict:
    if isinstance(data, Mapping):
        items = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return {prefix: data}
    return {key: value for k, v in items for key, value in _flat(v, f"{prefix}/{k}").items()}


def assert_same_merge(got: MergeRecipe, expected: MergeRecipe) -> None:
    """Same kind of recipe, same fields; numbers equal up to float rounding."""
    assert type(got) is type(expected)
    got_fields, expected_fields = _flat(got.to_json()), _flat(expected.to_json())
    assert got_fields.keys() == expected_fields.keys()
    for key, value in expected_fields.items():
        if isinstance(value, float):
            assert got_fields[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        else:
            assert got_fields[key] == value, key


def within(value: float, bounds) -> bool:
    return bounds.low <= value <= bounds.high


def assert_simplex_point(weights: Mapping[str, float]) -> None:
    assert list(weights) == CHECKPOINTS
    assert min(weights.values()) >= 0 and math.fsum(weights.values()) == pytest.approx(1.0)


def assert_in_space(space, recipe: MergeRecipe) -> None:
    p = space.parameters
    if space.rule_name == "simplex":
        assert isinstance(recipe, LinearRecipe) and not recipe.relative
        assert_simplex_point(recipe.weights)
    elif space.rule_name == "linear":
        assert isinstance(recipe, LinearRecipe) and recipe.relative == p.relative
        assert list(recipe.weights) == CHECKPOINTS and all(p.low <= w <= p.high for w in recipe.weights.values())
    elif space.rule_name == "task_vectors":
        assert isinstance(recipe, TaskVectorRecipe)
        assert (recipe.sparsify, recipe.consensus, recipe.seed) == (p.sparsify, p.consensus, p.seed)
        assert list(recipe.weights) == CHECKPOINTS and all(within(w, p.weight) for w in recipe.weights.values())
        assert within(recipe.density, p.density) and within(recipe.scale, p.scale)
    elif space.rule_name == "slerp":
        assert isinstance(recipe, SlerpRecipe) and within(recipe.t, p.t)
        assert CHECKPOINTS.index(recipe.first) < CHECKPOINTS.index(recipe.second)
    elif space.rule_name == "layerwise":
        assert isinstance(recipe, LayerwiseRecipe) and recipe.block_size == p.block_size
        assert len(recipe.blocks) == math.ceil(LAYERS / p.block_size)
        for weights in (*recipe.blocks, recipe.other):
            assert_simplex_point(weights)
    else:
        pytest.fail(f"no check for rule {space.rule_name!r}: add one")


def write_space(tmp_path: Path, data, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_space_loads_by_its_name(name):
    space = load_space(name, CHECKPOINTS, LAYERS)
    assert space.name == name and space.checkpoints == CHECKPOINTS and space.layers == LAYERS


@pytest.mark.parametrize("name", SHIPPED)
def test_suggestions_lie_in_the_space_and_follow_the_trial(name):
    space = load_space(name, CHECKPOINTS, LAYERS)
    recipes = [recipe for _, recipe in suggestions(space, 25)]
    for recipe in recipes:
        assert_in_space(space, recipe)
    assert len({str(recipe.to_json()) for recipe in recipes}) == 25


# The baselines (with a base checkpoint) each shipped space expresses as trial parameters; the
# others are scored beside the search.
EXPRESSED = {
    "simplex": {"c0", "c1", "c2", "uniform"},
    "linear": {"c0", "c1", "c2", "uniform"},
    "layerwise": {"c0", "c1", "c2", "uniform"},
    "task_arithmetic": {"task_arithmetic"},
    "ties": {"ties"},
    "dare_ties": {"dare_ties"},
    "dare_linear": {"dare_linear"},
    "slerp": {"slerp"},
}


def test_every_shipped_space_says_which_baselines_it_expresses():
    assert sorted(EXPRESSED) == SHIPPED


@pytest.mark.parametrize("name", sorted(EXPRESSED))
def test_baselines_the_space_expresses_round_trip_through_trial_parameters(name):
    space = load_space(name, CHECKPOINTS, LAYERS)
    baselines = baseline_recipes(CHECKPOINTS, has_base=True)
    params = {label: space.params_for(recipe) for label, recipe in baselines.items()}
    assert {label for label, p in params.items() if p is not None} == EXPRESSED[name]
    for label in sorted(EXPRESSED[name]):
        expected = baselines[label]
        if space.rule_name == "layerwise":  # the same linear merge in every block
            size = space.parameters.block_size
            expected = LayerwiseRecipe((expected.weights,) * math.ceil(LAYERS / size), expected.weights, block_size=size)
        assert_same_merge(replay(space, params[label]), expected)


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "layerwise"])
def test_suggested_recipes_round_trip_through_trial_parameters(name):
    space = load_space(name, CHECKPOINTS, LAYERS)
    for _, recipe in suggestions(space, 10, seed=1):
        params = space.params_for(recipe)
        assert params is not None, recipe
        assert_same_merge(replay(space, params), recipe)


OUTSIDE = {
    "simplex: a negative weight": ("simplex", LinearRecipe({"c0": 1.2, "c1": -0.2, "c2": 0.0})),
    "simplex: weights summing to 0.9": ("simplex", LinearRecipe({"c0": 0.5, "c1": 0.2, "c2": 0.2})),
    "simplex: task arithmetic": ("simplex", LinearRecipe({"c0": 0.5, "c1": 0.5}, relative=True)),
    "linear: a weight above high": ("linear", LinearRecipe({"c0": 1.6, "c1": 0.0, "c2": 0.0})),
    "linear: task arithmetic": ("linear", LinearRecipe({"c0": 1.0}, relative=True)),
    "task_arithmetic: a plain linear merge": ("task_arithmetic", LinearRecipe({"c0": 0.5, "c1": 0.5, "c2": 0.0})),
    "ties: DARE": ("ties", TaskVectorRecipe({"c0": 1.0}, "random", True, density=0.5)),
    "ties: density below the range": ("ties", TaskVectorRecipe({"c0": 1.0}, "magnitude", True, density=0.05)),
    "ties: lambda above the range": ("ties", TaskVectorRecipe({"c0": 1.0}, "magnitude", True, density=0.5, scale=2.0)),
    "dare_ties: another mask seed": ("dare_ties", TaskVectorRecipe({"c0": 1.0}, "random", True, density=0.5, seed=1)),
    "slerp: the pair in reverse order": ("slerp", SlerpRecipe("c1", "c0", 0.5)),
    "slerp: not a checkpoint": ("slerp", SlerpRecipe("c0", "zz", 0.5)),
    "slerp: t above the range": ("slerp", SlerpRecipe("c0", "c1", 1.5)),
    "slerp: a linear merge": ("slerp", LinearRecipe({"c0": 0.5, "c1": 0.5, "c2": 0.0})),
}


@pytest.mark.parametrize("case", sorted(OUTSIDE))
def test_recipes_outside_the_space_have_no_parameters(case):
    name, recipe = OUTSIDE[case]
    assert load_space(name, CHECKPOINTS, LAYERS).params_for(recipe) is None


def test_slerp_picks_a_pair_only_when_there_is_a_choice(tmp_path):
    two = load_space("slerp", ["a", "b"])
    assert all(set(trial.params) == {"t"} and (recipe.first, recipe.second) == ("a", "b") for trial, recipe in suggestions(two, 5))
    three = load_space("slerp", CHECKPOINTS)
    pairs = {trial.params["pair"] for trial, _ in suggestions(three, 30)}
    assert pairs == {"c0,c1", "c0,c2", "c1,c2"}

    fixed = load_space(str(write_space(tmp_path, {"name": "fixed", "rule": "slerp", "parameters": {"pair": ["c2", "c0"]}})), CHECKPOINTS)
    assert all(set(trial.params) == {"t"} and (recipe.first, recipe.second) == ("c2", "c0") for trial, recipe in suggestions(fixed, 5))
    assert fixed.params_for(SlerpRecipe("c0", "c1", 0.5)) is None
    assert fixed.params_for(SlerpRecipe("c2", "c0", 0.25)) == {"t": 0.25}


def test_layerwise_needs_numbered_layers():
    space = load_space("layerwise", CHECKPOINTS, layers=0)
    with pytest.raises(RecyclerError, match="search space 'layerwise': the model has no numbered layers to weigh block by block"):
        space.suggest(new_study().ask())
    assert space.params_for(LinearRecipe({"c0": 1.0, "c1": 0.0, "c2": 0.0})) is None


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_a_space_file_of_ones_own(tmp_path, suffix):
    data = {"name": "narrow", "rule": "linear", "parameters": {"low": 0.2, "high": 0.4, "relative": True}}
    space = load_space(str(write_space(tmp_path, data, name=f"narrow{suffix}")), CHECKPOINTS)
    assert space.name == "narrow"
    for _, recipe in suggestions(space, 10):
        assert recipe.relative and all(0.2 <= w <= 0.4 for w in recipe.weights.values())


def test_an_unknown_space_lists_the_shipped_ones():
    with pytest.raises(RecyclerError, match="search space 'spiral': no file .*spiral.yaml") as error:
        load_space("spiral", CHECKPOINTS)
    listed = re.search(r"\(spaces: (.*)\)", str(error.value)).group(1)
    assert listed.split(", ") == SHIPPED


def test_a_missing_space_file(tmp_path):
    missing = tmp_path / "nosuch.yaml"
    with pytest.raises(RecyclerError, match=f"search space '{re.escape(str(missing))}': no file {re.escape(str(missing))}"):
        load_space(str(missing), CHECKPOINTS)


TASK_VECTORS = {"name": "tv", "rule": "task_vectors", "parameters": {"sparsify": "magnitude", "consensus": True, "density": {"low": 0.1, "high": 1.0}}}


def _with(base: dict, **parameters) -> dict:
    return {**base, "parameters": {**base["parameters"], **parameters}}


BAD_SPACES = {
    "not YAML": ("name: [oops", "not valid YAML"),
    "a list": ("- simplex\n", "Input should be a valid dictionary"),
    "empty": ("", "Input should be a valid dictionary"),
    "unknown key": ({"name": "s", "rule": "linear", "colour": "red"}, "colour: Extra inputs are not permitted"),
    "no rule": ({"name": "s"}, "rule: Field required"),
    "bad name": ({"name": "two words", "rule": "linear"}, "name: String should match pattern"),
    "unknown rule": ({"name": "s", "rule": "spiral"}, r"rule: unknown rule 'spiral' \(rules: layerwise, linear, simplex, slerp, task_vectors\)"),
    "unknown parameter": ({"name": "s", "rule": "simplex", "parameters": {"flor": 0.1}}, "parameters.flor: Extra inputs are not permitted"),
    "floor zero": ({"name": "s", "rule": "simplex", "parameters": {"floor": 0}}, "parameters.floor: Input should be greater than 0"),
    "bounds reversed": ({"name": "s", "rule": "linear", "parameters": {"low": 1, "high": 0}}, r"low \(1.0\) must be below high \(0.0\)"),
    "empty range": ({"name": "s", "rule": "slerp", "parameters": {"t": {"low": 0.5, "high": 0.5}}}, r"parameters.t: low \(0.5\) must be below high \(0.5\)"),
    "density above one": (_with(TASK_VECTORS, density={"low": 0.5, "high": 1.5}), r"density must lie in \(0, 1\]"),
    "no density": ({**TASK_VECTORS, "parameters": {"sparsify": "magnitude", "consensus": True}}, "parameters.density: Field required"),
    "unknown sparsify": (_with(TASK_VECTORS, sparsify="sometimes"), "parameters.sparsify: Input should be 'magnitude' or 'random'"),
    "block size zero": ({"name": "s", "rule": "layerwise", "parameters": {"block_size": 0}}, "parameters.block_size: Input should be greater than or equal to 1"),
    "bad pair name": ({"name": "s", "rule": "slerp", "parameters": {"pair": ["c0", "no way"]}}, "parameters.pair.1: String should match pattern"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_space_files_are_one_line_errors_naming_the_file(tmp_path, case):
    data, expected = BAD_SPACES[case]
    path = write_space(tmp_path, data)
    with pytest.raises(RecyclerError) as error:
        load_space(str(path), CHECKPOINTS, LAYERS)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and re.search(expected, message), message
