"""The hostile catalogue: what a submitter with a `submit` token and write access inside an allowed
root (no --trust-task-code) tries, one case each, against the real service. Every case asserts the
answer (403 or 422, one line) and the absence of its effect: no marker file written by task code,
no outside secret in the response, nothing written outside the roots or left in the service's
folder of suite copies, no study queued, and the service answering the next request within a second.

Swaps after the check (a suite changed while its study waits, an export folder swapped for a link)
are in tests/test_service_task_check.py and tests/test_export_links.py.
"""

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recycler.service import ServiceConfig, create_app
from tests.service_auth import AUTH, TOKEN

SECRET = "OUTSIDE-SECRET-4242"
EVIL = "import pathlib\n\n\ndef process(docs):\n    pathlib.Path({marker!r}).write_text('ran')\n    return docs\n"
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(9))


class Scene:
    """The pool (the only allowed root), its suite's task folder, a folder outside the roots holding
    a secret, and the spec a client submits."""

    def __init__(self, base: Path, spec: dict) -> None:
        self.base = base
        self.pool = base / "pool"
        self.tasks = self.pool / "suite" / "tasks"
        self.outside = base / "outside"
        self.marker = base / "marker"
        self.spec = spec

    def sums(self, extra: str) -> None:
        """sums.yaml as the suite wrote it, plus `extra` YAML lines (a repeated key: the last wins)."""
        (self.tasks / "sums.yaml").write_text((self.tasks / "sums.yaml.orig").read_text() + extra)

    def write(self, relative: str, text: str) -> Path:
        path = self.pool / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def link(self, relative: str, target: Path) -> None:
        (self.pool / relative).parent.mkdir(parents=True, exist_ok=True)
        (self.pool / relative).symlink_to(target)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    import yaml

    from recycler.demo.tiny import write_pool
    from tests.suites import write_suite

    base = tmp_path_factory.mktemp("hostile")
    spec = yaml.safe_load(write_pool(base / "pool", 3).read_text())
    write_suite(base / "pool" / "suite")
    spec.update(suite="suite/suite.yaml", search={"space": "simplex", "trials": 4, "sampler": "RandomSampler", "seed": 1},
                resources={"workers": 1})
    scene = Scene(base, spec)
    (scene.tasks / "evil.py").write_text(EVIL.format(marker=str(scene.marker)))
    (scene.tasks / "sums.yaml.orig").write_text((scene.tasks / "sums.yaml").read_text())
    (scene.outside / "sub").mkdir(parents=True)
    (scene.outside / "sums.jsonl").write_text(json.dumps({"prompt": SECRET, "answer": SECRET}) + "\n")
    (scene.outside / "base.yaml").write_text(f"description: {SECRET}\n")
    (scene.outside / "README.md").write_text(f"---\nconfigs:\n- config_name: default\n  data_files: {scene.outside / 'sums.jsonl'}\n---\n")
    (scene.outside / "config.json").write_text(json.dumps({"model_type": SECRET}))
    shutil.copytree(scene.pool, base / "pristine", symlinks=True)
    return scene


@pytest.fixture(scope="module")
def client(scene):
    app = create_app(ServiceConfig(data=scene.base / "data", roots=[scene.pool], token=TOKEN, runner=False))
    with TestClient(app) as client:
        yield client


def _yaml(extra: str) -> Callable[[Scene], None]:
    return lambda scene: scene.sums(extra.format(outside=scene.outside))


def _files(files: dict[str, str]) -> Callable[[Scene], None]:
    """Files written into the pool (relative path -> text), beside sums.yaml as it was."""
    def make(scene: Scene) -> None:
        for relative, text in files.items():
            scene.write(relative, text)
    return make


def _fifo(relative: str, extra: str = "") -> Callable[[Scene], None]:
    def make(scene: Scene) -> None:
        os.mkfifo(scene.pool / relative)
        scene.sums(extra)
    return make


def _linked_data(link: str, target: Callable[[Scene], Path], data_files: str) -> Callable[[Scene], None]:
    def make(scene: Scene) -> None:
        scene.link(link, target(scene))
        scene.sums(f"dataset_kwargs:\n  data_files:\n    test: {data_files}\n")
    return make


def _hard_linked_data(scene: Scene) -> None:
    os.link(scene.tasks / "data" / "sums.jsonl", scene.tasks / "data" / "twin.jsonl")
    scene.sums("dataset_kwargs:\n  data_files:\n    test: data/twin.jsonl\n")


def _checkpoint(change: Callable[[Path, Path], None]) -> Callable[[Scene], None]:
    return lambda scene: change(scene.pool / "ckpt1", scene.outside)


def _linked_config(ckpt: Path, outside: Path) -> None:
    (ckpt / "config.json").unlink()
    (ckpt / "config.json").symlink_to(outside / "config.json")


def _index(shard: str) -> Callable[[Path, Path], None]:
    def change(ckpt: Path, outside: Path) -> None:
        index = {"metadata": {}, "weight_map": {"transformer.wte.weight": shard.format(outside=outside)}}
        (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    return change


def _linked_weights(ckpt: Path, outside: Path) -> None:
    shutil.copy(ckpt / "model.safetensors", outside / "model.safetensors")
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.safetensors").symlink_to(outside / "model.safetensors")


def _spec_change(**change: Callable[[Scene], object]) -> Callable[[Scene], dict]:
    """A case that submits another spec: key -> its value, made from the scene."""
    return lambda scene: {key: make(scene) for key, make in change.items()}


CODE = "loads Python"
OUTSIDE = "outside the allowed roots"
CASES: dict[str, tuple[Callable[[Scene], object], int, str]] = {
    # Code from an untrusted folder: every way lm-eval, `datasets` or transformers would import it.
    "!function as a value": (_yaml("process_docs: !function evil.process\n"), 403, CODE),
    "!function as a mapping key": (_yaml("metadata: {{!function evil.process : 1}}\n"), 403, CODE),
    "!function in a filter": (_yaml("filter_list:\n  - name: f\n    filter:\n      - {{function: custom, filter_fn: !function evil.process}}\n"), 403, CODE),
    "!function as the task class": (_yaml("class: !function evil.Task\n"), 403, CODE),
    "!function in the few-shot config": (_yaml("fewshot_config: {{sampler: first_n, samples: !function evil.process}}\n"), 403, CODE),
    "!function behind a merge key": (_yaml("hidden: &h {{f: !function evil.process}}\nmetadata:\n  <<: *h\n"), 403, CODE),
    "!function in a !!set": (_yaml("metadata: !!set {{? !function evil.process}}\n"), 422, "tag:yaml.org,2002:set is not allowed"),
    "!function in an !!omap": (_yaml("metadata: !!omap [{{a: !function evil.process}}]\n"), 422, "tag:yaml.org,2002:omap is not allowed"),
    "!function in !!pairs": (_yaml("metadata: !!pairs [{{a: !function evil.process}}]\n"), 422, "tag:yaml.org,2002:pairs is not allowed"),
    "a Python object tag": (_yaml("metadata: !!python/object/apply:os.system ['touch marker']\n"), 422, "not a valid lm-eval task YAML"),
    "a Python name tag": (_yaml("metadata: !!python/name:os.system\n"), 422, "not a valid lm-eval task YAML"),
    "a tag of its own": (_yaml("metadata: !include /etc/passwd\n"), 422, "not a valid lm-eval task YAML"),
    "!function in a YAML no task uses": (_files({"suite/tasks/unused.yaml": "task: unused\ndataset_path: json\ndoc_to_text: !function evil.process\n"}), 403, "task 'unused'"),
    "!function in a group YAML": (_files({"suite/tasks/group.yaml": "group: g\ntask: [sums]\naggregate_metric_list: !function evil.process\n"}), 403, CODE),
    "a group pushing task code onto its members": (_files({"suite/tasks/group.yaml": "group: g\ntask: [sums]\nprocess_results: evil.process\n"}),
                                                   403, "task 'g' (group.yaml): process_results loads Python"),
    "process_results as a name": (_yaml("process_results: evil.process\n"), 403, "process_results loads Python"),
    "a custom dataset": (_yaml("custom_dataset: evil.process\n"), 403, "custom_dataset loads Python"),
    "use_prompt from a file": (_yaml("use_prompt: FILE:{outside}/base.yaml\n"), 403, "use_prompt loads Python"),
    "unsafe_code": (_yaml("unsafe_code: true\n"), 403, "unsafe_code loads Python"),
    "a generate() that transformers imports": (_yaml("generation_kwargs: {{until: ['\\n'], custom_generate: ./evil}}\n"), 403, "generation_kwargs.custom_generate"),
    "a metric HF evaluate loads": (_yaml("metric_list:\n  - {{metric: ./my_metric, aggregation: mean}}\n"), 403, "metric_list.0.metric"),
    "hf_evaluate": (_yaml("metric_list:\n  - {{metric: acc, aggregation: mean, hf_evaluate: true}}\n"), 403, "metric_list.0.metric"),
    "a filter that is not registered": (_yaml("filter_list:\n  - name: f\n    filter:\n      - {{function: evil.process}}\n"), 403, "filter_list.0.filter.0.function"),
    "the custom filter": (_yaml("filter_list:\n  - name: f\n    filter:\n      - {{function: custom}}\n"), 403, "filter_list.0.filter.0.function"),
    "few-shot process_docs": (_yaml("fewshot_config: {{sampler: first_n, process_docs: evil.process}}\n"), 403, "fewshot_config.process_docs"),
    "a key lm-eval does not have": (_yaml("dataset_script: evil.py\n"), 422, "dataset_script is not a task key"),
    "an unknown few-shot key": (_yaml("fewshot_config: {{sampler: first_n, loader: evil}}\n"), 422, "fewshot_config.loader"),
    "trust_remote_code for datasets": (_yaml("dataset_kwargs:\n  data_files: {{test: data/sums.jsonl}}\n  trust_remote_code: true\n"), 422, "dataset_kwargs.trust_remote_code"),
    # Files outside the roots, by every key that names a path and at every level of links.
    "data_files absolute": (_yaml("dataset_kwargs:\n  data_files:\n    test: {outside}/sums.jsonl\n"), 403, OUTSIDE),
    "data_files with ..": (_yaml("dataset_kwargs:\n  data_files:\n    test: ../../../outside/sums.jsonl\n"), 403, OUTSIDE),
    "data_files in a list": (_yaml("dataset_kwargs:\n  data_files: [data/sums.jsonl, /etc/hostname]\n"), 403, OUTSIDE),
    "data_files as a URL": (_yaml("dataset_kwargs:\n  data_files:\n    test: file:///etc/hostname\n"), 403, "URLs are refused"),
    "data_files through a linked folder": (_linked_data("suite/tasks/data/escape", lambda s: s.outside, "data/escape/sums.jsonl"), 403, OUTSIDE),
    "data_files a link to a file": (_linked_data("suite/tasks/data/far.jsonl", lambda s: s.outside / "sums.jsonl", "data/far.jsonl"), 403, OUTSIDE),
    "data_files link/../file": (_linked_data("suite/tasks/data/deep", lambda s: s.outside / "sub", "data/deep/../sums.jsonl"), 403, OUTSIDE),
    "data_files a glob over a link": (_linked_data("suite/tasks/data/escape", lambda s: s.outside, "data/*/*.jsonl"), 403, OUTSIDE),
    "data_files a hard link": (_hard_linked_data, 422, "other hard links"),
    "data_dir outside": (_yaml("dataset_kwargs:\n  data_dir: /etc\n"), 422, "dataset_kwargs.data_dir is not a task key"),
    "data_dir inside (listed when the study runs, after the copy)": (_yaml("dataset_kwargs:\n  data_dir: data\n"), 422, "dataset_kwargs.data_dir"),
    "a recursive glob": (_yaml("dataset_kwargs:\n  data_files:\n    test: data/**/*.jsonl\n"), 422, "'**' is not allowed"),
    "a symlink loop": (_linked_data("suite/tasks/data/loop.jsonl", lambda s: s.tasks / "data" / "loop.jsonl", "data/loop.jsonl"), 403, "cannot be resolved"),
    "cache_dir": (_yaml("dataset_kwargs:\n  data_files: {{test: data/sums.jsonl}}\n  cache_dir: {outside}\n"), 422, "dataset_kwargs.cache_dir"),
    "a dataset folder with a card naming outside files": (_yaml("dataset_path: {outside}\n"), 403, "dataset_path"),
    "an include outside": (_yaml("include: {outside}/base.yaml\n"), 403, OUTSIDE),
    "an include cycle": (_files({"suite/tasks/a.yaml": "include: b.yaml\n", "suite/tasks/b.yaml": "include: a.yaml\n"}), 422, "include cycle"),
    "a shipped task over outside data": (_spec_change(suite=lambda s: {"name": "s", "held_in": [{"task": "arc_easy", "data_files": str(s.outside / "sums.jsonl")}]}), 403, OUTSIDE),
    "a task folder outside": (_spec_change(suite=lambda s: {"name": "s", "task_dir": str(s.outside), "held_in": [{"task": "sums"}]}), 403, OUTSIDE),
    "a checkpoint config.json linked outside": (_checkpoint(_linked_config), 403, OUTSIDE),
    "a checkpoint's weights linked outside": (_checkpoint(_linked_weights), 403, OUTSIDE),
    "an index naming an absolute shard": (_checkpoint(_index("{outside}/model.safetensors")), 403, "not a file of the checkpoint folder"),
    "an index naming a shard with ..": (_checkpoint(_index("../../outside/model.safetensors")), 403, "not a file of the checkpoint folder"),
    # Requests that would stall the service.
    "a flow list of 100,000 scalars": (_yaml("metadata: [" + "0," * 100_000 + "0]\n"), 422, "more than 20000 nodes"),
    "an alias bomb": (_yaml(BILLION_LAUGHS.replace("{", "{{").replace("}", "}}")), 422, "more than 20000 nodes, aliases expanded"),
    "a YAML over the size bound": (_yaml("description: '" + "x" * (256 << 10) + "'\n"), 422, "more than the 262144"),
    "a FIFO named like a task YAML": (_fifo("suite/tasks/stuck.yaml"), 422, "not a regular file"),
    "a FIFO as a data file": (_fifo("suite/tasks/data/stuck.jsonl", "dataset_kwargs:\n  data_files:\n    test: data/stuck.jsonl\n"), 422, "not a regular file"),
    "a FIFO in a checkpoint": (_fifo("ckpt1/tokenizer.json.fifo"), 422, "not a regular file"),
}


def _chains(scene: Scene) -> None:
    scene.write("suite/shared/c.yaml", "process_results: !function evil.process\n")
    scene.write("suite/shared/b.yaml", "include: c.yaml\n")
    scene.sums("include: ../shared/b.yaml\n")


def _task_list(scene: Scene) -> None:
    scene.write("suite/shared/group.yaml", "group: g\ntask_list:\n  - task: hidden\n    process_docs: !function evil.process\n")
    scene.sums("include: ../shared/group.yaml\n")


def _linked_include(scene: Scene) -> None:
    scene.link("suite/shared", scene.outside)
    scene.sums("include: ../shared/base.yaml\n")


def _many_files(folder: str, extra: str = "") -> Callable[[Scene], None]:
    """1,001 small files under `folder` of the pool: more than a check lists."""
    def make(scene: Scene) -> None:
        (scene.pool / folder).mkdir(parents=True, exist_ok=True)
        for i in range(1_001):
            (scene.pool / folder / f"{i}.jsonl").write_bytes(b"")
        scene.sums(extra)
    return make


def _fifo_suite(scene: Scene) -> dict:
    os.mkfifo(scene.pool / "suite" / "stuck.yaml")
    return {"suite": "suite/stuck.yaml"}


def _dataset_folder_inside(scene: Scene) -> None:
    scene.write("suite/tasks/ds/README.md", f"---\nconfigs:\n- config_name: default\n  data_files: {scene.outside}/sums.jsonl\n---\n")
    scene.sums("dataset_path: ./ds\n")


def _included_code(scene: Scene) -> None:
    scene.write("suite/shared/base.yaml", "process_results: !function evil.process\n")
    scene.sums("include: ../shared/base.yaml\n")


def _linked_checkpoint_folder(scene: Scene) -> dict:
    shutil.copytree(scene.pool / "ckpt1", scene.outside / "ckpt")
    scene.link("far", scene.outside / "ckpt")
    return {"checkpoints": [*scene.spec["checkpoints"][:2], {"name": "far", "path": str(scene.pool / "far")}]}


CASES.update({
    "!function in an included file": (_included_code, 403, "included ../shared/base.yaml: process_results loads Python"),
    "!function two includes down": (_chains, 403, "included c.yaml: process_results loads Python"),
    "!function in an include's task_list": (_task_list, 403, "included ../shared/group.yaml: line 4 loads Python"),
    "a dataset folder inside whose card points out": (_dataset_folder_inside, 403, "dataset_path"),
    "an include through a link": (_linked_include, 403, OUTSIDE),
    "a FIFO as the suite file": (_fifo_suite, 422, "stuck.yaml"),
    "a glob over a huge folder": (_many_files("suite/tasks/data/many", "dataset_kwargs:\n  data_files:\n    test: data/many/*.jsonl\n"), 422, "names more than 1000 files"),
    "a checkpoint folder of many files": (_many_files("ckpt1"), 422, "more than 1000 files in the checkpoint folder"),
    "a checkpoint folder linked outside": (_linked_checkpoint_folder, 403, OUTSIDE),
})


def _reset(scene: Scene) -> None:
    """The pool as it was built, and the outside folder with only its own files."""
    shutil.rmtree(scene.pool)
    shutil.copytree(scene.base / "pristine", scene.pool, symlinks=True)
    for extra in set(os.listdir(scene.outside)) - {"sums.jsonl", "base.yaml", "README.md", "config.json", "sub"}:
        shutil.rmtree(scene.outside / extra) if (scene.outside / extra).is_dir() else (scene.outside / extra).unlink()


def test_the_catalogue_covers_every_class():
    assert len(CASES) >= 40
    assert all(make is not None and status in (403, 422) and message for make, status, message in CASES.values())


@pytest.mark.parametrize("label", sorted(CASES))
def test_a_hostile_submission_is_refused_without_effect(scene, client, label):
    make, status, message = CASES[label]
    _reset(scene)
    try:
        change = make(scene)
        before = sorted(os.listdir(scene.outside))
        spec = {**scene.spec, **change} if isinstance(change, dict) else scene.spec
        started = time.monotonic()
        response = client.post("/api/studies", json={"spec": spec, "root": str(scene.pool)}, headers=AUTH)
        assert time.monotonic() - started < 3.0
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert message in detail and "\n" not in detail, detail
        assert SECRET not in response.text
        assert not scene.marker.exists()
        assert sorted(os.listdir(scene.outside)) == before
        assert not list((scene.base / "data" / "suites").glob("*")) if (scene.base / "data" / "suites").exists() else True
        started = time.monotonic()
        assert client.get("/api/studies", headers=AUTH).json() == []
        assert time.monotonic() - started < 1.0
    finally:
        _reset(scene)


def test_the_untouched_suite_is_accepted(scene, tmp_path):
    """The catalogue's scene is a valid submission before any change: each refusal above is the
    change's doing. It runs from a copy in the service's data folder, read as data only."""
    import yaml

    _reset(scene)
    app = create_app(ServiceConfig(data=tmp_path / "data", roots=[scene.pool], token=TOKEN, runner=False))
    with TestClient(app) as client:
        response = client.post("/api/studies", json={"spec": scene.spec, "root": str(scene.pool)}, headers=AUTH)
    assert response.status_code == 201, response.text
    stored = json.loads(app.state.service.store.study(response.json()["id"]).spec)
    task_dir = Path(stored["suite"]["task_dir"])
    assert task_dir.is_relative_to(tmp_path / "data" / "suites") and stored["suite"]["task_code"] is False
    copied = yaml.safe_load((task_dir / "sums.yaml").read_text())
    assert Path(copied["dataset_kwargs"]["data_files"]["test"]).is_relative_to(tmp_path / "data" / "suites")
