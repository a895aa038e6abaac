"""Pins the private library APIs recycler wraps in recycler/library_seams.py: a failure here means
an lm-eval or Optuna upgrade moved or changed one, and that module must follow it."""

import importlib

import lm_eval
import numpy as np
import optuna
import pytest

from recycler.library_seams import (
    compute_hypervolume,
    load_task_yaml,
    sandbox_task_templates,
)

PRIVATE = [("lm_eval.tasks._yaml_loader", "load_yaml", lm_eval), ("optuna._hypervolume", "compute_hypervolume", optuna),
           ("lm_eval.utils", "apply_template", lm_eval)]


@pytest.mark.parametrize("module, name, library", PRIVATE)
def test_private_apis_still_exist(module, name, library):
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{library.__name__} {library.__version__} no longer has {module}.{name} ({error}); "
                    "update recycler/library_seams.py")
    assert callable(found)


def test_task_yaml_merges_includes_and_imports_functions(tmp_path):
    (tmp_path / "helpers.py").write_text("def keep(docs):\n    return ['kept', *docs]\n")
    (tmp_path / "_base.yaml").write_text("dataset_path: json\noutput_type: loglikelihood\n"
                                         "process_docs: !function helpers.keep\n")
    (tmp_path / "task.yaml").write_text("include: _base.yaml\ntask: t\noutput_type: multiple_choice\n")
    config = load_task_yaml(tmp_path / "task.yaml")
    message = f"lm-eval {lm_eval.__version__} reads task YAMLs differently: {config}; update recycler/library_seams.py"
    assert set(config) == {"dataset_path", "output_type", "process_docs", "task"}, message
    assert (config["task"], config["dataset_path"], config["output_type"]) == ("t", "json", "multiple_choice"), message
    assert config["process_docs"](["doc"]) == ["kept", "doc"], message


# (points as losses, reference, hypervolume by hand)
KNOWN = {
    "2-D staircase: 3 + 2 + 1": ([[1, 3], [2, 2], [3, 1]], [4, 4], 6.0),
    "2-D, a dominated point adds nothing": ([[1, 3], [2, 2], [3, 1], [3, 3]], [4, 4], 6.0),
    "3-D box 1·2·3": ([[0, 0, 0]], [1, 2, 3], 6.0),
    "3-D three 2·1·1 boxes: 6 - 3 overlaps + 1 common": ([[0, 1, 1], [1, 0, 1], [1, 1, 0]], [2, 2, 2], 4.0),
}


@pytest.mark.parametrize("case", KNOWN)
def test_hypervolume_of_known_cases(case):
    points, reference, expected = KNOWN[case]
    got = compute_hypervolume(np.array(points, dtype=float), np.array(reference, dtype=float))
    assert got == pytest.approx(expected), (
        f"optuna {optuna.__version__}: hypervolume of {case} is {got}, not {expected}; update recycler/library_seams.py"
    )


def test_filters_run_over_the_instances_given_only(tmp_path):
    """A screening stage filters the instances it scored; the others keep no filtered response."""
    from recycler.library_seams import apply_filters_to
    from recycler.suite import parse_suite
    from tests.suites import add_generation_task, write_tasks

    add_generation_task(write_tasks(tmp_path / "tasks"))
    suite = parse_suite({"name": "s", "task_dir": "tasks", "held_in": [{"task": "answer", "metric": "exact_match,word"}]},
                        tmp_path, "suite")
    task = suite.build_tasks()["answer"]
    task.build_all_requests(limit=6, rank=0, world_size=1)
    scored, unscored = task.instances[:2], task.instances[2:]
    for instance in scored:
        instance.resps.append("42 and more")
    apply_filters_to(task, scored)
    message = f"lm-eval {lm_eval.__version__} keeps a task's filters elsewhere; update recycler/library_seams.py"
    assert [i.filtered_resps.get("word") for i in scored] == ["42", "42"], message
    assert all(not i.filtered_resps for i in unscored), message


def test_task_templates_render_in_jinja_s_sandbox():
    """lm-eval still renders templates through `lm_eval.utils.env`: once sandboxed, an ordinary
    template renders as before (with lm-eval's own filter), and one reaching for Python is refused."""
    import jinja2.sandbox
    from lm_eval.utils import apply_template

    doc = {"question": "2+2", "choices": ["3", "4"], "label": 1}
    ordinary = "Q: {{question}} A: {{choices[label]}} {{question | regex_replace('[+]', ' plus ')}}"
    before = apply_template(ordinary, doc)
    sandbox_task_templates()
    assert isinstance(lm_eval.utils.env, jinja2.sandbox.SandboxedEnvironment)
    assert apply_template(ordinary, doc) == before == "Q: 2+2 A: 4 2 plus 2"
    with pytest.raises(jinja2.exceptions.SecurityError):
        apply_template("{{ question.__class__.__mro__[1].__subclasses__() }}", doc)
