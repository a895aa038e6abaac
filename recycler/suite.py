"""Evaluation suites: which lm-eval tasks score a merge, with which metric, held-in or held-out.

Held-in tasks are the search's objectives; held-out tasks are only reported, to show whether a
merge generalizes. Task YAMLs are lm-eval's own format over local data files; relative
`data_files` resolve against the YAML's folder so a suite can live anywhere. A suite task may also
name an lm-eval group of task_dir's tasks, scored as lm-eval scores the group.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

import recycler.eval_suites
from recycler.config import Name, StrictModel, first_error, resolve_path
from recycler.errors import RecyclerError, one_line
from recycler.library_seams import load_task_yaml, sandbox_task_templates
from recycler.references import reference_file
from recycler.task_yaml import absolute_data_files, data_only_problem, listed_files, read_task_yaml
from recycler.yaml_files import load_yaml_file

SUITES_DIR = Path(recycler.eval_suites.__file__).parent


DataFiles = str | dict[str, str]


class SuiteTask(StrictModel):
    """One lm-eval task of a suite and the metric read from it."""

    task: str = Field(min_length=1)
    metric: str = Field(default="acc", description="an lm-eval metric of the task, optionally 'metric,filter'")
    limit: int | None = Field(default=None, gt=0, description="examples scored; all when omitted")
    num_fewshot: int | None = Field(default=None, ge=0, description="few-shot examples; the task's own default when omitted, else 0")
    data_files: DataFiles | None = Field(
        default=None,
        description="one of lm-eval's own tasks over local files in that task's format: a file for its test "
                    "split, or split -> file (JSON lines, CSV or Parquet by suffix); the task keeps its prompt, "
                    "filters and metrics",
    )

    @property
    def metric_name(self) -> str:
        """The metric without its filter: `exact_match` of `exact_match,letters`."""
        return self.metric.partition(",")[0]

    @property
    def filter_name(self) -> str | None:
        """The filter the metric names (`letters` of `exact_match,letters`), if it names one."""
        return self.metric.partition(",")[2] or None

    @field_validator("data_files")
    @classmethod
    def _resolve_data_files(cls, value: DataFiles | None, info: ValidationInfo) -> DataFiles | None:
        if isinstance(value, str):
            return str(resolve_path(Path(value), info))
        if isinstance(value, dict):
            return {split: str(resolve_path(Path(file), info)) for split, file in value.items()}
        return value


class SuiteSpec(StrictModel):
    """A suite file (or a pool spec's inline `suite:` mapping)."""

    name: Name
    task_dir: Path | None = Field(default=None, description="folder of lm-eval task YAMLs; lm-eval's own tasks when omitted")
    batch_size: int = Field(default=64, gt=0)
    limit: int | None = Field(default=None, gt=0, description="default per-task example limit")
    held_in: list[SuiteTask] = Field(min_length=1)
    held_out: list[SuiteTask] = []
    apply_chat_template: bool = Field(default=False, description="format prompts with the checkpoints' own chat template")
    fewshot_as_multiturn: bool = Field(default=False, description="few-shot examples as chat turns (needs apply_chat_template)")
    system_instruction: str | None = Field(default=None, description="a system message (or, without a chat template, a prefix)")
    fewshot_seed: int = Field(default=1234, description="seeds the choice of few-shot examples, as lm-eval's own default")
    task_code: bool = Field(default=True, description="whether task_dir's YAMLs may load Python (`!function`, task "
                                                      "classes); false reads them as data only (recycler/task_yaml.py)")

    @field_validator("task_dir")
    @classmethod
    def _resolve_task_dir(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)

    @model_validator(mode="after")
    def _tasks_once(self) -> SuiteSpec:
        seen: set[str] = set()
        for role, tasks in (("held_in", self.held_in), ("held_out", self.held_out)):
            for i, task in enumerate(tasks):
                if task.task in seen:
                    raise ValueError(f"{role}.{i}.task: task '{task.task}' is listed twice")
                seen.add(task.task)
        if self.fewshot_as_multiturn and not self.apply_chat_template:
            raise ValueError("fewshot_as_multiturn: needs apply_chat_template: true")
        return self


def _shipped_task_over(name: str, data_files: DataFiles, where: str) -> dict[str, Any]:
    """lm-eval's own config of a shipped task with its dataset swapped for local files: the prompt,
    few-shot settings, filters and metrics stay lm-eval's."""
    from lm_eval.tasks import TaskManager

    entry = TaskManager().task_index.get(name)
    if entry is None or entry.yaml_path is None:
        raise RecyclerError(f"{where}: not one of lm-eval's own tasks (data_files needs one)")
    config = load_task_yaml(entry.yaml_path)
    files = data_files if isinstance(data_files, dict) else {config.get("test_split") or "test": data_files}
    suffixes = {Path(f).suffix for f in files.values()}
    builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(suffixes.pop(), None) if len(suffixes) == 1 else None
    if builder is None:
        raise RecyclerError(f"{where}: data_files must all be .jsonl/.json, .csv or .parquet files")
    needed = {config.get(key) for key in ("test_split", "validation_split", "training_split", "fewshot_split")} - {None}
    if not needed & set(files):
        raise RecyclerError(f"{where}: data_files names splits {', '.join(files)}; the task reads {', '.join(sorted(needed))}")
    config.update(dataset_path=builder, dataset_kwargs={"data_files": files})
    config.pop("dataset_name", None)
    return config


MAX_TASK_YAMLS = 1_000


def task_yaml_files(task_dir: Path) -> list[Path]:
    """The YAML files of a task folder that a suite reads, every one (the service checks the same),
    at most MAX_TASK_YAMLS; one that is not a regular file (a FIFO would block its reader forever)
    is refused."""
    files = sorted(itertools.islice(task_dir.rglob("*.yaml"), MAX_TASK_YAMLS + 1))
    if len(files) > MAX_TASK_YAMLS:
        raise RecyclerError(f"{task_dir}: more than {MAX_TASK_YAMLS} task YAMLs in the task folder")
    for file in files:
        if file.exists() and not file.is_file():
            raise RecyclerError(f"{file}: a task YAML that is not a regular file")
    return files


def _is_group_config(config: dict[str, Any]) -> bool:
    """Whether a task YAML's config is an lm-eval group (a name over a `task` list), as suites read it."""
    return isinstance(config.get("group"), str) and not isinstance(config.get("task"), str)


def _task_configs(task_dir: Path, task_code: bool) -> dict[str, dict[str, Any]]:
    """Every task YAML under task_dir, by task name (a group's by its group name): read with lm-eval's own loader (which imports
    each `!function`) when the suite may load code, else with recycler's data-only reader, whose
    finished config lm-eval is handed as it is."""
    if not task_dir.is_dir():
        raise RecyclerError(f"{task_dir}: task folder does not exist")
    configs = {}
    for path in task_yaml_files(task_dir):
        config = _task_config(path) if task_code else _data_only_task_config(path)
        if _is_group_config(config):
            configs[config["group"]] = config
            continue
        if not isinstance(config.get("task"), str):
            continue
        kwargs = config.get("dataset_kwargs") or {}
        if "data_files" in kwargs:
            config["dataset_kwargs"] = {**kwargs, "data_files": absolute_data_files(kwargs["data_files"], path.parent)}
        configs[config["task"]] = config
    return configs


def _task_config(path: Path) -> dict[str, Any]:
    try:
        return load_task_yaml(path)
    except (yaml.YAMLError, ValueError, OSError) as error:
        raise RecyclerError(f"{path}: not a valid lm-eval task YAML ({one_line(error, 200)})") from None


def _data_only_task_config(path: Path) -> dict[str, Any]:
    task = read_task_yaml(path, str(path))
    for file, name, line in task.functions():
        raise RecyclerError(f"{file.path}: line {line}: !function {name} in a suite read as data only (task_code: false)")
    problem = data_only_problem(task.config)
    if problem is not None and (isinstance(task.config.get("task"), str) or _is_group_config(task.config)):
        raise RecyclerError(f"{path}: {problem} (the suite is read as data only: task_code: false)")
    return task.config


def _check_data_files(config: dict[str, Any], where: str) -> None:
    """A local task's data files exist and hold something."""
    files = [Path(f) for f in listed_files((config.get("dataset_kwargs") or {}).get("data_files"))]
    for file in files:
        if not file.is_file():
            raise RecyclerError(f"{where}: data file {file} does not exist")
    if files and all(file.stat().st_size == 0 for file in files):
        raise RecyclerError(f"{where}: has no examples (its data files are empty)")


def _group_spec(config: dict[str, Any], local: dict[str, dict[str, Any]], scored: set[str], where: str) -> dict[str, Any]:
    """A group of task_dir with its members' configs, in its order, as a suite scores it: each member
    a plain task YAML of task_dir that the suite scores nowhere else (added to `scored`), checked for
    data; the group sets nothing on its members (lm-eval would apply a task key of a group to each)."""
    from lm_eval.config.group import GroupConfig

    own = [f.name for f in fields(GroupConfig)]
    if other := sorted(set(config) - set(own)):
        raise RecyclerError(f"{where}: the group sets {', '.join(other)}, which a suite's group may not (only "
                            f"{', '.join(own)}); set them in its members' YAMLs")
    names = config.get("task")
    if not isinstance(names, list) or not names:
        raise RecyclerError(f"{where}: the group's `task` must list its members' task names")
    configs = []
    for name in names:
        if not isinstance(name, str):
            raise RecyclerError(f"{where}: the group's `task` list holds an inline {type(name).__name__}; a suite's "
                                "group names task YAMLs of task_dir")
        at = f"{where}: member '{name}'"
        member = local.get(name)
        if member is None:
            raise RecyclerError(f"{at}: not a task YAML of task_dir (a suite's group names those, not lm-eval tags or "
                                "lm-eval's own tasks)")
        if _is_group_config(member):
            raise RecyclerError(f"{at}: a group itself; a suite's group names tasks, not nested groups")
        if name in scored:
            raise RecyclerError(f"{at}: scored elsewhere in the suite too (by itself or in another group); a suite "
                                "scores each lm-eval task once")
        scored.add(name)
        _check_data_files(member, at)
        configs.append(member)
    return {**config, "task": configs}


def scored_filter(task: Any, spec: SuiteTask) -> str:
    """The filter whose answers the suite task's metric reads in an lm-eval task: the one the
    metric names (`exact_match,letters`), else the task's first (lm-eval's `none` when it has none)."""
    if spec.filter_name is not None:
        return spec.filter_name
    filters = task.config.filter_list
    return filters[0]["name"] if filters else "none"


def _group_metric(group: Any, spec: SuiteTask) -> Any:
    """The entry of a group's aggregate_metric_list by which lm-eval scores the group on the suite
    task's metric and the filter its members score (a mean of their scores), or None."""
    from lm_eval.config.group import AggMetricConfig

    metric = spec.metric_name
    filter_key = scored_filter(members(group)[0], spec)
    return next((entry for entry in group.aggregate_metric_list or []
                 if isinstance(entry, AggMetricConfig) and entry.metric == metric and entry.aggregation == "mean"
                 and (entry.filter_list is None or filter_key in entry.filter_list)), None)


def is_group(task: Any) -> bool:
    """Whether a built suite task is an lm-eval group."""
    from lm_eval.api.group import Group

    return isinstance(task, Group)


def members(task: Any) -> list[Any]:
    """The lm-eval tasks a built suite task scores: the task itself, or a group's members in order."""
    return task.get_all_tasks() if is_group(task) else [task]


@dataclass(frozen=True)
class Suite:
    """A validated suite; `build_tasks` turns it into lm-eval Task objects with their documents."""

    spec: SuiteSpec
    source: str

    @property
    def held_in(self) -> list[str]:
        return [t.task for t in self.spec.held_in]

    @property
    def held_out(self) -> list[str]:
        return [t.task for t in self.spec.held_out]

    @property
    def tasks(self) -> list[SuiteTask]:
        return self.spec.held_in + self.spec.held_out

    def limit(self, task: SuiteTask) -> int | None:
        return task.limit or self.spec.limit

    def task_specs(self) -> dict[str, dict[str, Any] | str]:
        """What lm-eval loads, by task: a config dict for a local task YAML (a group's with its
        members' configs as its `task` list), or the name of one of lm-eval's own tasks. Local data
        files are checked here, so their errors name the task."""
        local = _task_configs(self.spec.task_dir, self.spec.task_code) if self.spec.task_dir else {}
        scored = {task.task for task in self.tasks}  # lm-eval tasks the suite scores, each once
        specs: dict[str, dict[str, Any] | str] = {}
        for task in self.tasks:
            where = self._where(task)
            config = local.get(task.task)
            if config is None:
                if self.spec.task_dir is not None:
                    raise RecyclerError(f"{where}: no task of that name in {self.spec.task_dir}")
                if task.data_files is None:
                    specs[task.task] = task.task
                    continue
                config = _shipped_task_over(task.task, task.data_files, where)
            elif task.data_files is not None:
                raise RecyclerError(f"{where}: data_files is for lm-eval's own tasks; a task of task_dir names its data itself")
            elif _is_group_config(config):
                specs[task.task] = _group_spec(config, local, scored, where)
                continue
            _check_data_files(config, where)
            specs[task.task] = config
        return specs

    def _where(self, task: SuiteTask) -> str:
        return f"suite '{self.spec.name}' ({self.source}): task '{task.task}'"

    def build_tasks(self) -> dict[str, Any]:
        """lm-eval Task objects by suite task (for a group, lm-eval's Group holding its members'),
        each checked for its data, its metric and its examples."""
        from lm_eval.tasks import TaskManager

        sandbox_task_templates()  # a suite's templates are data, even when its folder may hold code
        specs = self.task_specs()
        manager = TaskManager(include_defaults=any(isinstance(s, str) for s in specs.values()))
        built = {}
        for task in self.tasks:
            spec = specs[task.task]
            if isinstance(spec, dict) and _is_group_config(spec):
                built[task.task] = self._group(task, spec, manager)
            else:
                built[task.task] = self._task(task, spec, task.task, self._where(task), manager)
        return built

    def _task(self, task: SuiteTask, spec: dict[str, Any] | str, name: str, where: str, manager: Any) -> Any:
        """One lm-eval task (the suite task, or a member of its group) loaded and checked, with the
        suite task's few-shot settings applied as simple_evaluate applies its own."""
        try:
            lm_task = manager.load(spec)["tasks"][name]
        except Exception as error:  # lm-eval and datasets raise many types; the user needs one line
            detail = one_line(error, 200) or type(error).__name__
            raise RecyclerError(f"{where}: lm-eval cannot load it ({detail})") from None
        metric = task.metric_name
        if metric not in lm_task.aggregation():
            raise RecyclerError(f"{where}: unknown metric '{metric}' (the task has {', '.join(lm_task.aggregation())})")
        if len(lm_task.eval_docs) == 0:
            raise RecyclerError(f"{where}: has no examples")
        if task.num_fewshot is not None:  # as simple_evaluate's num_fewshot, per task
            lm_task.set_config(key="num_fewshot", value=task.num_fewshot)
        elif lm_task.get_config("num_fewshot") is None:
            lm_task.set_config(key="num_fewshot", value=0)
        lm_task.set_fewshot_seed(seed=self.spec.fewshot_seed)
        return lm_task

    def _group(self, task: SuiteTask, spec: dict[str, Any], manager: Any) -> Any:
        """lm-eval's Group over the group's members, each loaded as the suite task (its metric,
        limit and few-shot settings apply to every member, as simple_evaluate applies its own); the
        group must score the suite task's metric after the one filter its members all score, and its members
        agree on the metric's direction."""
        from lm_eval.api.group import Group

        where = self._where(task)
        try:
            group = Group.from_config({**spec, "task": [member["task"] for member in spec["task"]]})
        except (TypeError, ValueError) as error:
            raise RecyclerError(f"{where}: not a valid lm-eval group ({one_line(error, 200)})") from None
        for member in spec["task"]:
            group.add(self._task(task, member, member["task"], f"{where}: member '{member['task']}'", manager))
        metric = task.metric_name
        if len({lm_task.higher_is_better().get(metric, True) for lm_task in group.get_all_tasks()}) > 1:
            raise RecyclerError(f"{where}: its members disagree on whether a higher {metric} is better")
        filters = sorted({scored_filter(lm_task, task) for lm_task in group.get_all_tasks()})
        if len(filters) > 1:
            raise RecyclerError(f"{where}: its members score {metric} after different filters ({', '.join(filters)}); "
                                "name one in the metric (METRIC,FILTER)")
        if _group_metric(group, task) is None:
            raise RecyclerError(f"{where}: the group's aggregate_metric_list has no entry for {metric} after filter "
                                f"'{filters[0]}' with aggregation mean (lm-eval's only group aggregation), so lm-eval gives "
                                "the group no score of it")
        return group

    @staticmethod
    def aggregate(task: Any, spec: SuiteTask, values: list[Any]) -> float:
        """A task's score from its examples' values of the metric, in example order, as lm-eval
        aggregates them (one place, so a score put together from screening stages is the score
        full evaluation gives)."""
        return float(task.aggregation()[spec.metric_name](values))

    @staticmethod
    def aggregate_group(group: Any, spec: SuiteTask, values: list[list[Any]]) -> float:
        """A group's score from each member's examples' values, as lm-eval puts it together: each
        member's own aggregation, then lm-eval's mean of those, weighted by the examples each
        member scored where the group's aggregate_metric_list says weight_by_size."""
        from lm_eval.api.metrics import aggregate_subtask_metrics

        scores = [Suite.aggregate(task, spec, v) for task, v in zip(members(group), values, strict=True)]
        return float(aggregate_subtask_metrics(scores, [len(v) for v in values], _group_metric(group, spec).weight_by_size))

    @staticmethod
    def higher_is_better(task: Any, spec: SuiteTask) -> bool:
        """lm-eval's direction of the task's metric (a group's members agree on it: build_tasks checks)."""
        return members(task)[0].higher_is_better().get(spec.metric_name, True)

    @staticmethod
    def aggregated_per_example(task: Any, spec: SuiteTask) -> bool:
        """Whether the task's score aggregates one number per example (mean, median, perplexity), so
        screening can put a score together from its stages; corpus metrics (bleu, f1) cannot."""
        from lm_eval.api.metrics import mean, median, nanmean, perplexity

        return task.aggregation()[spec.metric_name] in (mean, median, nanmean, perplexity)

    @staticmethod
    def mean_aggregated(task: Any, spec: SuiteTask) -> bool:
        """Whether the task's score is the mean of its examples' values (so a subset bounds it)."""
        from lm_eval.api.metrics import mean

        return task.aggregation()[spec.metric_name] is mean

    def check_tokenizer(self, tokenizer: Any, checkpoint: str) -> None:
        """A suite that asks for the chat template needs a tokenizer that has one."""
        if self.spec.apply_chat_template and not getattr(tokenizer, "chat_template", None):
            raise RecyclerError(f"suite '{self.spec.name}' ({self.source}): apply_chat_template is set, but the "
                                f"tokenizer of {checkpoint} has no chat template")

    def example_texts(self, tasks: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
        """Each scored example's prompt (without few-shot examples) and target, by task (a group's
        members' one after another), in the order the scorer reports per-example results."""
        texts = {}
        for spec in self.tasks:
            texts[spec.task] = [{"prompt": str(task.doc_to_text(doc)), "target": str(task.doc_to_target(doc))}
                                for task in members(tasks[spec.task])
                                for _, doc in task.doc_iterator(rank=0, limit=self.limit(spec), world_size=1)]
        return texts


def parse_suite(data: Any, root: Path, source: str) -> Suite:
    """Validate a suite mapping; relative paths resolve against root."""
    if not isinstance(data, dict):
        raise RecyclerError(f"{source}: a suite must be a YAML mapping, got {type(data).__name__}")
    try:
        return Suite(SuiteSpec.model_validate(data, context={"root": root}), source)
    except ValidationError as error:
        raise RecyclerError(f"{source}: {first_error(error)}") from None


def load_suite(ref: str | SuiteSpec) -> Suite:
    """A suite by name (a file in eval_suites/), by path, or already parsed inline in a pool spec."""
    if isinstance(ref, SuiteSpec):
        return Suite(ref, "pool spec")
    path = reference_file(ref, SUITES_DIR)
    if not path.is_file():
        known = sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))
        raise RecyclerError(f"suite '{ref}': no file {path} (suites in eval_suites/: {', '.join(known) or 'none'})")
    return parse_suite(load_yaml_file(path, str(path)), path.resolve().parent, str(path))
