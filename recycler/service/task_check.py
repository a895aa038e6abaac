"""What a submitted suite's lm-eval task YAMLs would make the service run and read, found before
lm-eval opens any of them: no Python unless the task folder lies under a root trusted for code,
and no file outside the allowed roots.

The YAMLs are read as lm-eval reads them (`include:` relative to the including file's real folder,
the including file's keys winning, `data_files` made absolute as the suite makes them), but with a
bounded safe loader (regular files, a size and alias bound) that records each `!function` wherever
it stands (a key, a set, an included file's `task_list`) instead of importing it, and refuses YAML's
collection tags that hold values out of sight (`!!set`, `!!omap`, `!!pairs`). A check, not a
sandbox: a file changed after the check is not seen again.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from recycler.errors import RecyclerError, one_line
from recycler.service.security import AllowedRoots, PathNotAllowed
from recycler.suite import SuiteSpec, absolute_data_files, listed_files, task_yaml_files
from recycler.yaml_files import BoundedSafeLoader, read_text_file

_GLOB_CHARACTERS = set("*?[")
_LM_EVAL_GENERATION_KEYS = ("until", "max_gen_toks")  # lm-eval's own, taken out before `generate`


class _Function(str):
    """A `!function module.name` value, not imported."""


class _Loader(BoundedSafeLoader):
    """lm-eval's task YAML syntax with nothing run: `!function` gives a _Function and is recorded
    with its line; any other tag a safe loader does not know is an error."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.functions: list[tuple[str, int]] = []


def _function(loader: _Loader, node: yaml.Node) -> _Function:
    value = _Function(loader.construct_scalar(node))
    loader.functions.append((str(value), node.start_mark.line + 1))
    return value


def _refused_tag(loader: _Loader, node: yaml.Node) -> None:
    raise yaml.constructor.ConstructorError(None, None, f"{node.tag} is not allowed in a task YAML", node.start_mark)


_Loader.add_constructor("!function", _function)
for _tag in ("set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refused_tag)


def check_suite_tasks(suite: SuiteSpec, roots: AllowedRoots) -> None:
    """PathNotAllowed (403), one line naming the task and the key, for a task that would load
    Python from a file outside the roots trusted for code or open a file outside the allowed roots.

    Every YAML of the task folder is checked, not only the suite's tasks: the suite reads them all.
    Trust goes by the folder of the file that holds the code (symlinks followed), so an include
    does not carry code from an untrusted folder into a trusted task.
    """
    for task in suite.held_in + suite.held_out:
        for file in listed_files(task.data_files):
            _check_local(file, roots, f"suite task '{task.task}': data_files")
    if suite.task_dir is None or not suite.task_dir.is_dir():
        return
    for path in task_yaml_files(suite.task_dir):
        top, functions = _read(path, roots, f"suite.task_dir: {path.relative_to(suite.task_dir)}")
        name = top.get("task") if isinstance(top.get("task"), str) else path.name
        where = f"suite.task_dir: task '{name}' ({path.relative_to(suite.task_dir)})"
        merged = {}
        for included, file, data, functions in _with_includes(path, None, top, functions, roots, where, set()):
            if not roots.trusts_code(file.parent):
                _refuse_code(data, functions, where if included is None else f"{where}, included {included}")
            merged = {**merged, **data}
        merged.pop("include", None)
        for key, value in _opened_paths(merged, path.parent):
            _check_local(value, roots, f"{where}: {key}")


def _read(path: Path, roots: AllowedRoots, where: str) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """A task YAML's keys, and every `!function` in it with its line."""
    roots.inside(path, where)
    text = read_text_file(path, where)
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


def _with_includes(path: Path, written: str | None, data: dict[str, Any], functions: list[tuple[str, int]],
                   roots: AllowedRoots, where: str, seen: set[Path]
                   ) -> Iterator[tuple[str | None, Path, dict[str, Any], list[tuple[str, int]]]]:
    """Each file of an include chain: the include as written (None for the top file), the file
    resolved (its own folder decides whether its code is trusted), its keys and its `!function`s;
    included files first, as lm-eval merges them."""
    resolved = path.resolve()
    if resolved in seen:
        raise RecyclerError(f"{where}: include cycle at {path}")
    seen.add(resolved)
    includes = data.get("include")
    for include in includes if isinstance(includes, list) else [] if includes is None else [includes]:
        target = Path(str(include))
        target = target if target.is_absolute() else resolved.parent / target
        included, included_functions = _read(target, roots, f"{where}: include {include}")
        yield from _with_includes(target, str(include), {k: v for k, v in included.items() if k != "task_list"},
                                  included_functions, roots, where, seen)
    yield written, resolved, data, functions


def _refuse_code(data: dict[str, Any], functions: list[tuple[str, int]], where: str) -> None:
    for key, what in _code(data, functions):
        raise PathNotAllowed(f"{where}: {key} loads Python ({what}); its YAML is not under a --trust-task-code root")


def _code(data: dict[str, Any], functions: list[tuple[str, int]]) -> Iterator[tuple[str, str]]:
    """Where a task YAML makes lm-eval import code: `!function` anywhere (lm-eval's loader imports
    each one while parsing, wherever it stands: named by its key where it is a value, else by its
    line), a task `class`, a metric that is not lm-eval's own (HF evaluate loads it, from a local
    script if named so), and a generation keyword that is not a plain generation setting (lm-eval
    hands them all to `model.generate`, and transformers loads code for some, such as
    `custom_generate`)."""
    from lm_eval.api import metrics  # noqa: F401 - fills lm-eval's metric registry
    from lm_eval.api.registry import METRIC_REGISTRY
    from transformers import GenerationConfig

    yield from _functions(data, "")
    for name, line in functions:
        yield f"line {line}", f"!function {name}"
    if "class" in data:
        yield "class", "a Python task class"
    generation = data.get("generation_kwargs")
    settings = {*GenerationConfig().to_dict(), *_LM_EVAL_GENERATION_KEYS}
    for key in generation if isinstance(generation, dict) else {}:
        if key not in settings:
            yield f"generation_kwargs.{key}", "not a generation setting of transformers' GenerationConfig or lm-eval"
    metric_list = data.get("metric_list")
    for i, entry in enumerate(metric_list if isinstance(metric_list, list) else []):
        if not isinstance(entry, dict):
            continue
        if entry.get("hf_evaluate") is True or (isinstance(entry.get("metric"), str) and entry["metric"] not in METRIC_REGISTRY):
            yield f"metric_list.{i}.metric", f"'{entry.get('metric')}' is not one of lm-eval's metrics, so HF evaluate loads it"


def _functions(value: Any, key: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, _Function):
        yield key, f"!function {value}"
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _functions(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _functions(v, f"{key}.{i}")


def _opened_paths(config: dict[str, Any], folder: Path) -> Iterator[tuple[str, str]]:
    """The local paths lm-eval's `datasets.load_dataset(dataset_path, **dataset_kwargs)` reads:
    data files (relative to the YAML, as the suite passes them), data and cache folders, and a
    dataset path that names something on disk."""
    kwargs = config.get("dataset_kwargs")
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    for file in listed_files(kwargs.get("data_files")):
        yield "dataset_kwargs.data_files", file if _is_url(file) else absolute_data_files(file, folder)
    path = config.get("dataset_path")
    local = isinstance(path, str) and (os.path.isabs(path) or path.startswith((".", "~")) or Path(path).exists())
    for key in ("data_dir", "cache_dir"):
        if isinstance(kwargs.get(key), str):
            value = kwargs[key]
            if key == "data_dir" and local:  # `datasets` reads a local dataset's data_dir inside it
                value = os.path.join(os.path.expanduser(path), value)
            yield f"dataset_kwargs.{key}", value
    if local:
        yield "dataset_path", path


def _is_url(value: str) -> bool:
    return "://" in value or "::" in value


def _check_local(value: str, roots: AllowedRoots, where: str) -> None:
    """A path (relative to the working folder, as `datasets` takes it) or a glob pattern, whose every
    match, and every file under a folder, resolves inside the allowed roots; URLs are refused."""
    if _is_url(value):
        raise PathNotAllowed(f"{where}: {value} is not a local path (URLs are refused)")
    path = Path(os.path.abspath(Path(value).expanduser()))
    if _GLOB_CHARACTERS & set(value):
        fixed = next(i for i, part in enumerate(path.parts) if _GLOB_CHARACTERS & set(part))
        roots.inside(Path(*path.parts[:fixed]), where)
        matches = [Path(m) for m in glob.glob(str(path), recursive=True)]
    else:
        matches = [path]
    for match in matches:
        roots.inside(match, where)
        if match.is_dir():
            for below in match.rglob("*"):
                roots.inside(below, where)
