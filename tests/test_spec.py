from pathlib import Path

import pytest
import yaml

from recycler.errors import RecyclerError
from recycler.spec import load_spec


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


GOOD = {
    "name": "lab",
    "checkpoints": [{"name": "a", "path": "runs/a"}, {"name": "b", "path": "/abs/b"}],
    "base": {"name": "base", "path": "../base"},
    "suite": "suites/mine.yaml",
    "objectives": ["addition", "reversal"],
    "search": {"space": "linear", "trials": 20, "sampler": "NSGAIISampler", "seed": 3},
    "resources": {"workers": 2, "gpus_per_worker": 1},
}


def test_relative_paths_resolve_against_the_spec_folder(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.checkpoints[0].path == (tmp_path / "runs/a").resolve()
    assert spec.checkpoints[1].path == Path("/abs/b")
    assert spec.base.path == (tmp_path.parent / "base").resolve()
    assert spec.suite == str((tmp_path / "suites/mine.yaml").resolve())
    assert spec.search.trials == 20 and spec.resources.workers == 2
    assert spec.checkpoint_names == ["a", "b"]


def test_defaults():
    from recycler.spec import PoolSpec

    spec = PoolSpec.model_validate({"name": "x", "checkpoints": [{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"}]})
    assert spec.suite == "demo" and spec.search.space == "simplex" and spec.resources.workers == 1


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"checkpoints": [{"name": "a", "path": "a"}]}, "checkpoints: List should have at least 2 items"),
        ({"checkpoints": [{"name": "a", "path": "a"}, {"name": "a", "path": "b"}]}, "checkpoints.1.name: duplicate checkpoint name 'a'"),
        ({"base": {"name": "a", "path": "x"}}, "base.name: duplicate checkpoint name 'a'"),
        ({"checkpoints": [{"name": "a"}, {"name": "b", "path": "b"}]}, "checkpoints.0.path: Field required"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"search": {"trials": 0}}, "search.trials: Input should be greater than 0"),
        ({"search": {"fidelity": {"screen_fraction": [0.3, 0.1]}}}, "search.fidelity.screen_fraction: stages must rise: [0.3, 0.1]"),
        ({"search": {"fidelity": {"screen_fraction": [0.1, 1.0]}}}, "search.fidelity.screen_fraction: each share must lie strictly between 0 and 1"),
        ({"search": {"fidelity": {"screen_fraction": [k / 10 for k in range(1, 10)]}}}, "search.fidelity.screen_fraction: at most 8 stages, got 9"),
        ({"resources": {"workers": -1}}, "resources.workers: Input should be greater than 0"),
        ({"checkpoints": [{"name": "a b", "path": "a"}, {"name": "b", "path": "b"}]}, "checkpoints.0.name: String should match pattern"),
        # an inline suite's errors are its own, never the reference branch's "should be a valid string"
        ({"suite": {"name": "s", "held_in": [{"task": "t"}], "held_out": [{"task": "t"}]}}, "suite: held_out.0.task: task 't' is listed twice"),
        ({"suite": {"name": "s", "held_in": [{"task": "t"}], "heldout": []}}, "suite.heldout: Extra inputs are not permitted"),
        ({"suite": {"name": "s"}}, "suite.held_in: Field required"),
        ({"suite": 5}, "suite: a name or a path (text), or a mapping given inline; got int"),
    ],
)
def test_errors_name_the_file_and_field(tmp_path, change, expected):
    path = write(tmp_path, {**GOOD, **change})
    with pytest.raises(RecyclerError) as error:
        load_spec(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {expected}")
    assert "\n" not in message


@pytest.mark.parametrize("text, expected", [("name: [unclosed", "not valid YAML"), ("- a\n- b\n", "must be a YAML mapping")])
def test_unreadable_specs(tmp_path, text, expected):
    with pytest.raises(RecyclerError, match=expected):
        load_spec(write(tmp_path, text))


def test_missing_spec(tmp_path):
    with pytest.raises(RecyclerError, match="pool spec not found"):
        load_spec(tmp_path / "nope.yaml")
