import pytest
import yaml

from recycler.demo.tiny import write_pool
from recycler.errors import RecyclerError
from recycler.spec import load_spec
from recycler.suite import load_suite
from tests.suites import write_suite


def test_held_in_and_held_out_are_kept_apart(tmp_path):
    suite = load_suite(str(write_suite(tmp_path)))
    assert suite.held_in == ["sums", "pick"] and suite.held_out == ["carry"]
    tasks = suite.build_tasks()
    assert sorted(tasks) == ["carry", "pick", "sums"]
    assert len(tasks["sums"].eval_docs) == 40
    assert suite.limit(suite.spec.held_out[0]) == 25


def test_a_pool_spec_may_carry_its_suite_inline(tmp_path):
    spec_path = write_pool(tmp_path, 2)
    write_suite(tmp_path / "mine")
    spec = yaml.safe_load(spec_path.read_text())
    spec["suite"] = {"name": "mine", "task_dir": "mine/tasks", "held_in": [{"task": "sums"}]}
    spec_path.write_text(yaml.safe_dump(spec))
    suite = load_suite(load_spec(spec_path).suite)
    assert suite.spec.task_dir == (tmp_path / "mine" / "tasks").resolve()
    assert list(suite.build_tasks()) == ["sums"]


def _empty_data(folder):
    (folder / "tasks" / "data" / "sums.jsonl").write_text("")


def _missing_data(folder):
    (folder / "tasks" / "data" / "pick.jsonl").unlink()


BAD_SUITES = {
    "unknown task": ({"held_in": [{"task": "nosuch"}]}, None, "task 'nosuch': no task of that name in"),
    "unknown metric": ({"held_in": [{"task": "sums", "metric": "bleu"}]}, None, "task 'sums': unknown metric 'bleu' \\(the task has acc, perplexity\\)"),
    "missing data file": ({}, _missing_data, "task 'pick': data file .*pick.jsonl does not exist"),
    "no examples": ({}, _empty_data, "task 'sums': "),
    "task twice": ({"held_out": [{"task": "sums"}]}, None, "held_out.0.task: task 'sums' is listed twice"),
    "no held-in task": ({"held_in": []}, None, "held_in: List should have at least 1 item"),
    "missing task folder": ({"task_dir": "nowhere"}, None, "nowhere: task folder does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_SUITES))
def test_bad_suites_give_one_line_naming_them(tmp_path, case):
    overrides, corrupt, expected = BAD_SUITES[case]
    path = write_suite(tmp_path, **overrides)
    if corrupt:
        corrupt(tmp_path)
    with pytest.raises(RecyclerError, match=expected) as error:
        load_suite(str(path)).build_tasks()
    assert "\n" not in str(error.value)


def test_unknown_suite_name():
    with pytest.raises(RecyclerError, match="suite 'nosuch': no file"):
        load_suite("nosuch")
