"""The service runs no task code and reads no task file that its roots do not cover: a submitted
suite's task YAMLs are checked before lm-eval opens them (recycler/service/task_check.py)."""

import pytest
from fastapi.testclient import TestClient

from recycler.service import ServiceConfig, create_app
from tests.service_auth import AUTH, TOKEN, finished

EVIL = """\
import os
import pathlib


def process(docs):
    pathlib.Path({marker!r}).write_text(f"{{os.getpid()}} {{os.environ.get('RECYCLER_TOKEN')}}")
    return docs
"""


@pytest.fixture
def setup(tmp_path, pool_spec):
    """The tiny pool and arith suite under tmp_path/pool (the only allowed root), a task module that
    would write tmp_path/marker, and a folder outside the roots with a data file in it."""
    spec = pool_spec(trials=4)
    tasks = tmp_path / "pool" / "suite" / "tasks"
    (tasks / "evil.py").write_text(EVIL.format(marker=str(tmp_path / "marker")))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sums.jsonl").write_text((tasks / "data" / "sums.jsonl").read_text())
    return spec, tasks, outside


def api(tmp_path, runner=False, **config):
    return TestClient(create_app(ServiceConfig(data=tmp_path / "data", roots=[tmp_path / "pool"], token=TOKEN, runner=runner, **config)))


def submit(client, tmp_path, spec):
    return client.post("/api/studies", json={"spec": spec, "root": str(tmp_path / "pool")}, headers=AUTH)


def with_sums(tasks, extra: str) -> None:
    """sums.yaml as written by tests/suites.py, plus `extra` YAML lines."""
    original = tasks / "sums.yaml.orig"
    if not original.exists():
        original.write_text((tasks / "sums.yaml").read_text())
    (tasks / "sums.yaml").write_text(original.read_text() + extra)


CODE_CASES = {
    "!function": ("process_docs: !function evil.process\n", "task 'sums' (sums.yaml): process_docs loads Python (!function evil.process)"),
    "a filter function": ("filter_list:\n  - name: f\n    filter:\n      - {function: custom, filter_fn: !function evil.process}\n",
                          "filter_list.0.filter.0.filter_fn loads Python"),
    "a task class": ("class: !function evil.Task\n", "class loads Python"),
    "a generate() that transformers imports": (
        "generation_kwargs: {until: ['\\n'], custom_generate: ./evil_generate, trust_remote_code: true}\n",
        "generation_kwargs.custom_generate loads Python (not a generation setting"),
    "a metric HF evaluate loads": ("metric_list:\n  - {metric: ./my_metric, aggregation: mean}\n",
                                   "metric_list.0.metric loads Python ('./my_metric' is not one of lm-eval's metrics"),
}


def test_task_code_outside_a_trusted_root_is_refused_and_never_runs(tmp_path, setup):
    spec, tasks, _ = setup
    with api(tmp_path) as client:
        for label, (extra, message) in CODE_CASES.items():
            with_sums(tasks, extra)
            response = submit(client, tmp_path, spec)
            assert response.status_code == 403, (label, response.text)
            assert message in response.json()["detail"] and "\n" not in response.json()["detail"], label
        (tasks.parent / "shared").mkdir()
        (tasks.parent / "shared" / "base.yaml").write_text("process_results: !function evil.process\n")
        with_sums(tasks, "include: ../shared/base.yaml\n")
        detail = submit(client, tmp_path, spec).json()["detail"]
        assert detail.startswith("suite.task_dir: task 'sums' (sums.yaml), included ../shared/base.yaml: process_results loads Python")
        with_sums(tasks, "")
        (tasks / "unused.yaml").write_text("task: unused\ndataset_path: json\ndoc_to_text: !function evil.process\n")
        response = submit(client, tmp_path, spec)  # not one of the suite's tasks, but the suite reads every YAML
        assert response.status_code == 403 and "task 'unused'" in response.json()["detail"]
        assert client.get("/api/studies", headers=AUTH).json() == []
    assert not (tmp_path / "marker").exists()


def test_task_files_outside_the_roots_are_refused(tmp_path, setup):
    spec, tasks, outside = setup
    (tasks / "data" / "escape").symlink_to(outside)
    (outside / "base.yaml").write_text("dataset_path: json\n")
    (tasks.parent / "shared").mkdir()
    (tasks.parent / "shared" / "far.yaml").write_text((tasks / "sums.yaml").read_text().replace("data/sums.jsonl", str(outside / "sums.jsonl")))
    escape = "dataset_kwargs:\n  data_files:\n    test: {}\n"
    cases = {
        "absolute": (escape.format(outside / "sums.jsonl"), "dataset_kwargs.data_files"),
        "relative with ..": (escape.format("../../../outside/sums.jsonl"), "dataset_kwargs.data_files"),
        "through a symlink": (escape.format("data/escape/sums.jsonl"), "dataset_kwargs.data_files"),
        "a list of files": ("dataset_kwargs:\n  data_files: [data/sums.jsonl, /etc/hostname]\n", "dataset_kwargs.data_files"),
        "a glob": (escape.format("data/*/*.jsonl"), "dataset_kwargs.data_files"),
        "a URL": (escape.format("file:///etc/hostname"), "not a local path"),
        "a dataset folder": (f"dataset_path: {outside}\n", "dataset_path"),
        "an include outside": (f"include: {outside / 'base.yaml'}\n", "include"),
    }
    with api(tmp_path) as client:
        for label, (extra, key) in cases.items():
            with_sums(tasks, extra)
            response = submit(client, tmp_path, spec)
            assert response.status_code == 403, (label, response.text)
            detail = response.json()["detail"]
            assert detail.startswith(("suite.task_dir: task 'sums' (sums.yaml): ", "suite.task_dir: sums.yaml: include")), (label, detail)
            assert key in detail, (label, detail)
        (tasks / "sums.yaml").write_text("task: sums\ninclude: ../shared/far.yaml\n")  # its data files come from the include
        detail = submit(client, tmp_path, spec).json()["detail"]
        assert detail.startswith("suite.task_dir: task 'sums' (sums.yaml): dataset_kwargs.data_files: ") and "outside" in detail
        with_sums(tasks, escape.format("../tasks/data/sums.jsonl"))  # '..' that stays inside is fine
        assert submit(client, tmp_path, spec).status_code == 201
        shipped = {**spec, "suite": {"name": "s", "held_in": [{"task": "arc_easy", "data_files": str(outside / "sums.jsonl")}]}}
        response = submit(client, tmp_path, shipped)
        assert response.status_code == 403 and response.json()["detail"].startswith("suite task 'arc_easy': data_files: ")
        assert len(client.get("/api/studies", headers=AUTH).json()) == 1


def test_trusted_task_code_runs_its_study_outside_the_server(tmp_path, setup, local_ray, monkeypatch):
    """Code from a trusted folder runs, but in the study's driver and workers, never in the server
    process, and none of them sees the service's token."""
    import os
    import sys

    from recycler.service.security import load_token

    spec, tasks, _ = setup
    monkeypatch.setenv("RECYCLER_TOKEN", "token-from-the-environment")
    token, _ = load_token(tmp_path / "token")
    assert token == "token-from-the-environment" and "RECYCLER_TOKEN" not in os.environ
    with_sums(tasks, "process_docs: !function evil.process\n")
    with api(tmp_path, runner=True, trust_task_code=[tmp_path / "pool" / "suite"]) as client:
        client.app.state.runner.poll_seconds = 0.2
        study = submit(client, tmp_path, spec)
        assert study.status_code == 201, study.text
        summary = finished(client, study.json()["id"])
    assert summary["state"] == "done" and summary["finished"] == 4, summary
    pid, seen = (tmp_path / "marker").read_text().split()
    assert int(pid) != os.getpid() and seen == "None"
    assert not [name for name in sys.modules if name.endswith("evil")]


def test_a_suite_changed_after_it_was_queued_is_not_read(tmp_path, setup, local_ray):
    """The study runs from the copy of its suite made at submission: code added to the task folder
    and data files swapped for links to outside files while it waited in the queue are never read."""
    spec, tasks, outside = setup
    (outside / "sums.jsonl").write_text((outside / "sums.jsonl").read_text().replace('"prompt": "', '"prompt": "OUTSIDE'))
    with api(tmp_path) as client:  # the API alone: the study stays queued
        study = submit(client, tmp_path, spec)
        assert study.status_code == 201, study.text
    with_sums(tasks, "process_docs: !function evil.process\n")
    (tasks / "data" / "sums.jsonl").unlink()
    (tasks / "data" / "sums.jsonl").symlink_to(outside / "sums.jsonl")
    with api(tmp_path, runner=True) as client:
        client.app.state.runner.poll_seconds = 0.2
        summary = finished(client, study.json()["id"])
    assert summary["state"] == "done" and summary["finished"] == 4, summary
    kept = [file.read_bytes() for file in (tmp_path / "data" / "studies").rglob("*") if file.is_file()]
    assert kept and not any(b"OUTSIDE" in text for text in kept)
    assert not (tmp_path / "marker").exists()


def test_an_include_does_not_carry_untrusted_code_into_a_trusted_folder(tmp_path, setup):
    spec, tasks, _ = setup
    (tmp_path / "pool" / "shared").mkdir()
    (tmp_path / "pool" / "shared" / "base.yaml").write_text("process_docs: !function evil.process\n")
    with_sums(tasks, "include: ../../shared/base.yaml\n")
    with api(tmp_path, trust_task_code=[tmp_path / "pool" / "suite"]) as client:
        response = submit(client, tmp_path, spec)
    assert response.status_code == 403 and "included ../../shared/base.yaml: process_docs loads Python" in response.json()["detail"]


def test_trusted_roots_lie_under_allowed_roots(tmp_path):
    from recycler.errors import RecyclerError

    with pytest.raises(RecyclerError, match=r"^--trust-task-code .*: not under an allowed root"):
        api(tmp_path, trust_task_code=[tmp_path / "elsewhere"])


HIDDEN_CODE = {
    "!function as a mapping key": ("metadata: {!function evil.process : 1}\n", 403, "line 14 loads Python (!function evil.process)"),
    "!function in a !!set": ("metadata: !!set {? !function evil.process}\n", 422, "tag:yaml.org,2002:set is not allowed in a task YAML"),
    "!function in !!omap": ("metadata: !!omap [{a: !function evil.process}]\n", 422, "tag:yaml.org,2002:omap is not allowed"),
    "!function in !!pairs": ("metadata: !!pairs [{a: !function evil.process}]\n", 422, "tag:yaml.org,2002:pairs is not allowed"),
    "a Python object tag": ("metadata: !!python/object/apply:os.system ['touch marker']\n", 422, "not a valid lm-eval task YAML"),
}
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(9))


def test_code_hidden_where_a_walk_of_values_does_not_look_is_refused(tmp_path, setup):
    """lm-eval's loader imports every `!function` while parsing, wherever it stands: as a key,
    inside YAML's other collections, in an included file's `task_list`."""
    spec, tasks, _ = setup
    with api(tmp_path) as client:
        for label, (extra, status, message) in HIDDEN_CODE.items():
            with_sums(tasks, extra)
            response = submit(client, tmp_path, spec)
            assert response.status_code == status, (label, response.text)
            assert message in response.json()["detail"] and "\n" not in response.json()["detail"], (label, response.text)
        (tasks.parent / "shared").mkdir()
        (tasks.parent / "shared" / "group.yaml").write_text(
            "group: g\ntask_list:\n  - task: hidden\n    process_docs: !function evil.process\n")
        with_sums(tasks, "include: ../shared/group.yaml\n")
        detail = submit(client, tmp_path, spec).json()["detail"]
        assert detail.startswith("suite.task_dir: task 'sums' (sums.yaml), included ../shared/group.yaml: line 4 loads Python")
        assert client.get("/api/studies", headers=AUTH).json() == []
    assert not (tmp_path / "marker").exists() and not (tmp_path / "data" / "marker").exists()


def test_an_alias_bomb_or_a_fifo_is_refused_at_once_and_the_service_goes_on(tmp_path, setup):
    """A few hundred bytes of nested aliases (10^10 leaves) and a FIFO named like a task YAML: each
    refused with one line in well under a second, and the next request answered as usual."""
    import os
    import time

    spec, tasks, _ = setup
    assert len(BILLION_LAUGHS) < 600
    with api(tmp_path) as client:
        with_sums(tasks, BILLION_LAUGHS)
        started = time.monotonic()
        response = submit(client, tmp_path, spec)
        assert time.monotonic() - started < 1.0
        assert response.status_code == 422 and "more than 20000 nodes, aliases expanded" in response.json()["detail"], response.text
        with_sums(tasks, "")
        os.mkfifo(tasks / "pipe.yaml")
        started = time.monotonic()
        response = submit(client, tmp_path, spec)
        assert time.monotonic() - started < 1.0
        assert response.status_code == 422 and "pipe.yaml: a task YAML that is not a regular file" in response.json()["detail"]
        (tasks / "pipe.yaml").unlink()
        started = time.monotonic()
        assert submit(client, tmp_path, spec).status_code == 201
        assert time.monotonic() - started < 5.0
