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


def _group(**groups: str):
    """Group YAMLs (name -> the YAML after `group: name`) written into the task folder."""
    def write(folder):
        for name, text in groups.items():
            (folder / "tasks" / f"{name}.yaml").write_text(f"group: {name}\n{text}")
    return write


_ACC = "aggregate_metric_list: [{metric: acc, aggregation: mean}]\n"


def _group_of_a_tag(folder):
    sums = folder / "tasks" / "sums.yaml"
    sums.write_text(sums.read_text() + "tag: arith_tag\n")
    _group(g="task: [arith_tag]\n" + _ACC)(folder)


_IN_GROUP = {"held_in": [{"task": "g"}], "held_out": []}

BAD_SUITES = {
    "unknown task": ({"held_in": [{"task": "nosuch"}]}, None, "task 'nosuch': no task of that name in"),
    "unknown metric": ({"held_in": [{"task": "sums", "metric": "bleu"}]}, None, "task 'sums': unknown metric 'bleu' \\(the task has acc, perplexity\\)"),
    "missing data file": ({}, _missing_data, "task 'pick': data file .*pick.jsonl does not exist"),
    "no examples": ({}, _empty_data, "task 'sums': "),
    "task twice": ({"held_out": [{"task": "sums"}]}, None, "held_out.0.task: task 'sums' is listed twice"),
    "no held-in task": ({"held_in": []}, None, "held_in: List should have at least 1 item"),
    "missing task folder": ({"task_dir": "nowhere"}, None, "nowhere: task folder does not exist"),
    "nested group": (_IN_GROUP, _group(inner="task: [sums]\n" + _ACC, g="task: [inner]\n" + _ACC),
                     "task 'g': member 'inner': a group itself; a suite's group names tasks, not nested groups"),
    "inline group member": (_IN_GROUP, _group(g="task: [{task: sums, num_fewshot: 2}]\n" + _ACC),
                            "task 'g': the group's `task` list holds an inline dict"),
    "group of a tag": (_IN_GROUP, _group_of_a_tag, "task 'g': member 'arith_tag': not a task YAML of task_dir"),
    "group metric not aggregated": ({"held_in": [{"task": "g", "metric": "perplexity"}], "held_out": []},
                                    _group(g="task: [sums, carry]\n" + _ACC),
                                    "task 'g': the group's aggregate_metric_list has no entry for perplexity after filter 'none' "
                                    "with aggregation mean"),
    "group metric after another filter": (_IN_GROUP, _group(g="task: [sums, carry]\naggregate_metric_list: [{metric: acc, "
                                                          "aggregation: mean, filter_list: [strict]}]\n"),
                                          "task 'g': the group's aggregate_metric_list has no entry for acc after filter 'none'"),
    "group member listed alone": ({"held_in": [{"task": "g"}]}, _group(g="task: [sums, carry]\n" + _ACC),
                                  "task 'g': member 'carry': scored elsewhere in the suite too"),
    "group setting its members' keys": (_IN_GROUP, _group(g="task: [sums]\nnum_fewshot: 3\n" + _ACC),
                                        "task 'g': the group sets num_fewshot, which a suite's group may not"),
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
