"""recycler's data-only reader of lm-eval task YAMLs: it puts a task together as lm-eval's own loader
does, imports nothing, and knows every key lm-eval's task config has."""

import dataclasses

import pytest

from recycler.errors import RecyclerError
from recycler.library_seams import load_task_yaml
from recycler.suite import parse_suite
from recycler.task_yaml import FEWSHOT_KEYS, TASK_KEYS, data_only_problem, read_task_yaml
from tests.suites import write_suite


def test_every_key_of_lm_evals_task_config_is_classified():
    """A key a new lm-eval adds is refused for untrusted suites until it is classified here."""
    from lm_eval.api.task import TaskConfig
    from lm_eval.config.group import GroupConfig
    from lm_eval.config.task import FewshotConfig

    assert {f.name for f in dataclasses.fields(TaskConfig)} - set(TASK_KEYS) == set()
    assert {f.name for f in dataclasses.fields(GroupConfig)} - set(TASK_KEYS) == set()
    assert {f.name for f in dataclasses.fields(FewshotConfig)} - set(FEWSHOT_KEYS) == set()


def test_includes_merge_as_lm_eval_merges_them(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "root.yaml").write_text("output_type: loglikelihood\ndescription: root\nrepeats: 1\n")
    (tmp_path / "shared" / "mid.yaml").write_text("include: root.yaml\ndescription: mid\ntask_list: [x]\n")
    (tmp_path / "other.yaml").write_text("target_delimiter: ' '\ndescription: other\n")
    (tmp_path / "task.yaml").write_text("include: [shared/mid.yaml, other.yaml]\ntask: t\ndataset_path: json\nrepeats: 2\n")
    ours = read_task_yaml(tmp_path / "task.yaml", "task.yaml")
    assert ours.config == load_task_yaml(tmp_path / "task.yaml")
    assert [file.include for file in ours.files] == ["root.yaml", "shared/mid.yaml", "other.yaml", None]


def test_a_suite_read_as_data_gives_lm_eval_the_same_tasks(tmp_path):
    write_suite(tmp_path / "suite")
    data = {"name": "s", "task_dir": "suite/tasks", "held_in": [{"task": "sums"}, {"task": "pick", "metric": "acc_norm"}]}
    with_code = parse_suite(data, tmp_path, "suite").task_specs()
    as_data = parse_suite({**data, "task_code": False}, tmp_path, "suite")
    assert as_data.task_specs() == with_code
    built = as_data.build_tasks()
    assert [doc["prompt"] for doc in built["sums"].eval_docs][:3] == [doc["prompt"] for doc in parse_suite(data, tmp_path, "suite").build_tasks()["sums"].eval_docs][:3]


def test_a_suite_read_as_data_refuses_code_and_imports_nothing(tmp_path):
    write_suite(tmp_path / "suite")
    tasks = tmp_path / "suite" / "tasks"
    (tasks / "evil.py").write_text(f"import pathlib\npathlib.Path({str(tmp_path / 'marker')!r}).write_text('ran')\n"
                                   "def process(docs):\n    return docs\n")
    (tasks / "sums.yaml").write_text((tasks / "sums.yaml").read_text() + "process_docs: !function evil.process\n")
    suite = parse_suite({"name": "s", "task_dir": "suite/tasks", "task_code": False, "held_in": [{"task": "sums"}]}, tmp_path, "suite")
    with pytest.raises(RecyclerError, match=r"sums.yaml: line \d+: !function evil.process in a suite read as data only"):
        suite.build_tasks()
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize(("extra", "problem"), [
    ({"process_results": "x"}, "process_results loads Python"),
    ({"dataset_script": "x"}, "dataset_script is not a task key"),
    ({"dataset_path": "./local"}, "dataset_path: ./local is not one of the `datasets` loaders"),
    ({"dataset_kwargs": {"data_files": "a.jsonl", "trust_remote_code": True}}, "dataset_kwargs.trust_remote_code is not"),
    ({"fewshot_config": {"sampler": "first_n", "process_docs": "x"}}, "fewshot_config.process_docs loads Python"),
])
def test_data_only_problems_name_the_key(extra, problem):
    assert problem in data_only_problem({"task": "t", "dataset_path": "json", **extra})
    assert data_only_problem({"task": "t", "dataset_path": "json", "doc_to_text": "{{q}}"}) is None


def test_a_group_read_as_data_is_the_group_lm_eval_reads(tmp_path):
    """A group's YAML passes the data-only reader, which gives the same group and members as
    lm-eval's loader; a task key on a group is checked as on a task."""
    from recycler.suite import members

    write_suite(tmp_path / "suite")
    group = tmp_path / "suite" / "tasks" / "arith.yaml"
    group.write_text("group: arith\ntask: [sums, carry]\naggregate_metric_list: [{metric: acc, aggregation: mean}]\n")
    data = {"name": "s", "task_dir": "suite/tasks", "held_in": [{"task": "arith"}]}
    as_data = parse_suite({**data, "task_code": False}, tmp_path, "suite")
    assert as_data.task_specs() == parse_suite(data, tmp_path, "suite").task_specs()
    assert [task.task_name for task in members(as_data.build_tasks()["arith"])] == ["sums", "carry"]
    group.write_text(group.read_text() + "process_results: x\n")
    with pytest.raises(RecyclerError, match="arith.yaml: process_results loads Python"):
        as_data.task_specs()
