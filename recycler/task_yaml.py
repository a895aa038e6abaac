"""lm-eval task YAMLs read as data: recycler's own reader, which never imports anything, and the
classification of every key lm-eval's task config has.

lm-eval's own YAML loader imports each `!function` while it parses, wherever the tag stands, so a
YAML someone else wrote cannot be checked after lm-eval has read it. This reader is YAML's safe
loader within bounds (regular files, a size and alias bound), records each `!function` with its
file and line instead of importing it, refuses YAML's collection tags that hold values out of
sight (`!!set`, `!!omap`, `!!pairs`), and merges `include:` as lm-eval does (included files first,
the including file's keys winning, an included file's `task_list` dropped). What it returns is the
finished config that lm-eval is handed, so what was checked is what runs.

A suite read as data (`task_code: false`, every untrusted suite of the service) may use only the
keys classified below as data, template or path; code keys and keys not classified are refused,
so a key a new lm-eval adds is refused until it is classified here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from recycler.errors import RecyclerError, one_line
from recycler.yaml_files import BoundedSafeLoader, read_text_file

PACKAGED_BUILDERS = ("json", "csv", "parquet", "text", "arrow")  # `datasets` loaders that read data_files only


class KeyKind(Enum):
    DATA = "data"  # a plain value lm-eval reads
    TEMPLATE = "template"  # a Jinja template or a column name (rendered in recycler's sandbox)
    PATH = "path"  # names what `datasets` opens: checked, and copied into a service study's snapshot
    CODE = "code"  # makes lm-eval, `datasets` or transformers import or run Python


TASK_KEYS: dict[str, KeyKind] = {
    **dict.fromkeys(("task", "task_alias", "tag", "group", "group_alias", "aggregate_metric_list", "dataset_name",
                     "training_split", "validation_split", "test_split", "fewshot_split",
                     "target_delimiter", "fewshot_delimiter", "num_fewshot", "output_type", "repeats",
                     "should_decontaminate", "metadata", "metric_list", "generation_kwargs",
                     "filter_list", "fewshot_config"), KeyKind.DATA),
    **dict.fromkeys(("doc_to_text", "doc_to_target", "doc_to_choice", "doc_to_image", "doc_to_audio",
                     "doc_to_decontamination_query", "description", "gen_prefix"), KeyKind.TEMPLATE),
    **dict.fromkeys(("dataset_path", "dataset_kwargs"), KeyKind.PATH),
    **dict.fromkeys(("class", "custom_dataset", "process_docs", "process_results", "use_prompt", "unsafe_code",
                     "task_list"), KeyKind.CODE),
}
FEWSHOT_KEYS: dict[str, KeyKind] = {
    **dict.fromkeys(("sampler", "split", "fewshot_indices", "samples", "fewshot_delimiter", "target_delimiter"),
                    KeyKind.DATA),
    **dict.fromkeys(("doc_to_text", "doc_to_target", "doc_to_choice", "gen_prefix"), KeyKind.TEMPLATE),
    "process_docs": KeyKind.CODE,
}
# data_dir is not among them: `datasets` lists that folder when the study runs, after the submission's copy
DATASET_KWARGS = ("data_files", "field", "delimiter", "sep", "column_names", "encoding")
_LM_EVAL_GENERATION_KEYS = ("until", "max_gen_toks")  # lm-eval's own, taken out before `generate`


class TaskFunction(str):
    """A `!function module.name` value, not imported."""


@dataclass(frozen=True)
class TaskFile:
    """One file of an include chain: the include as written (None for the top file), the file's
    real path (its own folder decides whether its code is trusted), and its `!function`s by line."""

    include: str | None
    path: Path
    functions: list[tuple[str, int]]


@dataclass(frozen=True)
class TaskYaml:
    """A task YAML with its includes merged, and the files it was put together from."""

    config: dict[str, Any]
    files: list[TaskFile] = field(default_factory=list)

    def functions(self) -> Iterator[tuple[TaskFile, str, int]]:
        """Each `!function` of every file, with its file and line."""
        for file in self.files:
            for name, line in file.functions:
                yield file, name, line


class _Loader(BoundedSafeLoader):
    """lm-eval's task YAML syntax with nothing run: `!function` gives a TaskFunction and is recorded
    with its line; any other tag a safe loader does not know is an error."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.functions: list[tuple[str, int]] = []


def _function(loader: _Loader, node: yaml.Node) -> TaskFunction:
    value = TaskFunction(loader.construct_scalar(node))
    loader.functions.append((str(value), node.start_mark.line + 1))
    return value


def _refused_tag(loader: _Loader, node: yaml.Node) -> None:
    raise yaml.constructor.ConstructorError(None, None, f"{node.tag} is not allowed in a task YAML", node.start_mark)


_Loader.add_constructor("!function", _function)
for _tag in ("set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refused_tag)


def _read(path: Path, where: str, inside: Callable[[Path], bool] | None) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    text = read_text_file(path, where, inside=inside)
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as error:
        raise RecyclerError(f"{where}: not a valid lm-eval task YAML ({one_line(error, 200)})") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise RecyclerError(f"{where}: not a valid lm-eval task YAML (a mapping is needed)")
    return data, loader.functions


def read_task_yaml(path: Path, where: str, opening: Callable[[Path, str], Path] = lambda path, _: path,
                   inside: Callable[[Path], bool] | None = None) -> TaskYaml:
    """The task YAML at `path` with its includes merged as lm-eval merges them. `opening(path,
    where)` is called on every file before it is read and gives the path to read, and `inside` is
    checked again on the open file (the service's roots: recycler.files.open_regular)."""
    files: list[TaskFile] = []
    config = _merged(path, None, where, (opening, inside), files, set())
    return TaskYaml(config, files)


def _merged(path: Path, written: str | None, where: str,
            checks: tuple[Callable[[Path, str], Path], Callable[[Path], bool] | None],
            files: list[TaskFile], seen: set[Path]) -> dict[str, Any]:
    at = where if written is None else f"{where}: include {written}"
    opening, inside = checks
    resolved = opening(path, at).resolve()
    if resolved in seen:
        raise RecyclerError(f"{where}: include cycle at {path}")
    seen.add(resolved)
    data, functions = _read(resolved, at, inside)
    includes = data.pop("include", None)
    merged: dict[str, Any] = {}
    for include in includes if isinstance(includes, list) else [] if includes is None else [includes]:
        target = Path(str(include))
        included = _merged(target if target.is_absolute() else resolved.parent / target, str(include), where,
                           checks, files, seen)
        included.pop("task_list", None)
        merged.update(included)
    files.append(TaskFile(written, resolved, functions))
    return {**merged, **data}


def code_in(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(key, what) for each place a finished task config makes lm-eval import or run code: a code
    key, a `!function` value, a metric that is not lm-eval's own (HF evaluate loads it, from a local
    script if so named), a filter that is not registered, and a generation keyword that is not a
    plain generation setting (transformers loads code for some, such as `custom_generate`)."""
    import lm_eval.api.metrics  # noqa: F401 - fills lm-eval's metric registry
    import lm_eval.filters  # noqa: F401 - fills lm-eval's filter registry
    from lm_eval.api.registry import FILTER_REGISTRY, METRIC_REGISTRY
    from transformers import GenerationConfig

    yield from function_values(config, "")
    for key, kind in TASK_KEYS.items():
        if kind is KeyKind.CODE and key in config:
            yield key, "a Python hook" if key != "unsafe_code" else "runs the model's output as code"
    fewshot = config.get("fewshot_config")
    if isinstance(fewshot, dict) and "process_docs" in fewshot:
        yield "fewshot_config.process_docs", "a Python hook"
    generation = config.get("generation_kwargs")
    settings = {*GenerationConfig().to_dict(), *_LM_EVAL_GENERATION_KEYS}
    for key in generation if isinstance(generation, dict) else {}:
        if key not in settings:
            yield f"generation_kwargs.{key}", "not a generation setting of transformers' GenerationConfig or lm-eval"
    metric_list = config.get("metric_list")
    for i, entry in enumerate(metric_list if isinstance(metric_list, list) else []):
        if isinstance(entry, dict) and (entry.get("hf_evaluate") is True
                                        or (isinstance(entry.get("metric"), str) and entry["metric"] not in METRIC_REGISTRY)):
            yield f"metric_list.{i}.metric", f"'{entry.get('metric')}' is not one of lm-eval's metrics, so HF evaluate loads it"
    filter_list = config.get("filter_list")
    for i, entry in enumerate(filter_list if isinstance(filter_list, list) else []):
        steps = entry.get("filter") if isinstance(entry, dict) else None
        for j, step in enumerate(steps if isinstance(steps, list) else []):
            name = step.get("function") if isinstance(step, dict) else None
            if isinstance(name, str) and (name not in FILTER_REGISTRY or name == "custom"):
                yield f"filter_list.{i}.filter.{j}.function", f"'{name}' is not one of lm-eval's registered filters"


def function_values(value: Any, key: str) -> Iterator[tuple[str, str]]:
    """(the key path, joined by dots, and '!function NAME') of each `!function` value under `key`."""
    if isinstance(value, TaskFunction):
        yield key, f"!function {value}"
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from function_values(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from function_values(v, f"{key}.{i}")


def unclassified_in(config: dict[str, Any]) -> Iterator[str]:
    """Each key of a finished config, and of its `fewshot_config` and `dataset_kwargs`, that is not
    classified above (a suite read as data may not use it)."""
    yield from (key for key in config if key not in TASK_KEYS)
    fewshot = config.get("fewshot_config")
    yield from (f"fewshot_config.{key}" for key in (fewshot if isinstance(fewshot, dict) else {}) if key not in FEWSHOT_KEYS)
    kwargs = config.get("dataset_kwargs")
    yield from (f"dataset_kwargs.{key}" for key in (kwargs if isinstance(kwargs, dict) else {}) if key not in DATASET_KWARGS)


def data_only_problem(config: dict[str, Any]) -> str | None:
    """Why a finished config cannot be run as data only (its first problem), or None."""
    for key, what in code_in(config):
        return f"{key} loads Python ({what})"
    for key in unclassified_in(config):
        return f"{key} is not a task key recycler reads as data ({', '.join(sorted(TASK_KEYS))} are)"
    path = config.get("dataset_path")
    if path is not None and path not in PACKAGED_BUILDERS:
        return (f"dataset_path: {path} is not one of the `datasets` loaders a suite read as data may use "
                f"({', '.join(PACKAGED_BUILDERS)}, with dataset_kwargs.data_files)")
    return None


def opened_paths(config: dict[str, Any], folder: Path) -> Iterator[tuple[str, str]]:
    """The local paths `datasets.load_dataset(dataset_path, **dataset_kwargs)` reads for a finished
    config: data files (relative to the YAML's folder, as the suite passes them), data and cache
    folders, and a dataset path that names something on disk."""
    kwargs = config.get("dataset_kwargs")
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    for file in listed_files(kwargs.get("data_files")):
        yield "dataset_kwargs.data_files", file if is_url(file) else absolute_data_files(file, folder)
    path = config.get("dataset_path")
    local = isinstance(path, str) and path not in PACKAGED_BUILDERS and (
        os.path.isabs(path) or path.startswith((".", "~")) or Path(path).exists())
    for key in ("data_dir", "cache_dir"):
        if isinstance(kwargs.get(key), str):
            value = kwargs[key]
            if key == "data_dir" and local:  # `datasets` reads a local dataset's data_dir inside it
                value = os.path.join(os.path.expanduser(path), value)
            yield f"dataset_kwargs.{key}", value
    if local:
        yield "dataset_path", path


def is_url(value: str) -> bool:
    return "://" in value or "::" in value


def absolute_data_files(value: Any, folder: Path) -> Any:
    """A task YAML's `data_files` with relative paths made absolute against its folder, as the
    suite hands them to lm-eval (which would read them against the working folder)."""
    if isinstance(value, str):
        return str(folder / value) if not Path(value).is_absolute() else value
    if isinstance(value, list):
        return [absolute_data_files(v, folder) for v in value]
    if isinstance(value, dict):
        return {k: absolute_data_files(v, folder) for k, v in value.items()}
    return value


def listed_files(value: Any) -> list[str]:
    """Every path of a `data_files` value: a path, a list of them, or split -> path(s)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [f for v in value for f in listed_files(v)]
    if isinstance(value, dict):
        return [f for v in value.values() for f in listed_files(v)]
    return []
