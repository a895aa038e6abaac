from pathlib import Path

import pytest

from recycler.references import is_file_reference, reference_file
from recycler.space import SPACES_DIR, load_space
from recycler.spec import PoolSpec


@pytest.mark.parametrize("ref", ["x.yml", "x.yaml", "a/b", "/abs/space", "spaces/mine.yaml", "./local"])
def test_files_are_yaml_names_or_paths(ref):
    assert is_file_reference(ref)


@pytest.mark.parametrize("ref", ["simplex", "demo", "task_arithmetic", "v1.2", "yaml"])
def test_shipped_names_are_not_files(ref):
    assert not is_file_reference(ref)


def test_a_name_reads_the_shipped_file_and_a_path_reads_itself():
    assert reference_file("simplex", SPACES_DIR) == SPACES_DIR / "simplex.yaml"
    assert reference_file("a/b", SPACES_DIR) == Path("a/b")


def test_a_space_path_without_suffix_resolves_against_the_spec_and_loads(tmp_path):
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "mine").write_text((SPACES_DIR / "simplex.yaml").read_text())
    checkpoints = [{"name": "a", "path": "a"}, {"name": "b", "path": "b"}]
    spec = PoolSpec.model_validate(
        {"name": "p", "checkpoints": checkpoints, "search": {"space": "spaces/mine"}}, context={"root": tmp_path}
    )
    assert spec.search.space == str((tmp_path / "spaces" / "mine").resolve())
    assert load_space(spec.search.space, ["a", "b"]).name == "simplex"
