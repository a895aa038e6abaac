"""What a submitted suite's lm-eval task YAMLs would make the service run and read, found with
recycler's data-only reader (recycler/task_yaml.py) before anything else opens them: no Python
unless the file holding it lies under a root trusted for code, no file outside the allowed roots,
and, for a suite that is not trusted (run as data only), no key that is not classified as data.

Includes are resolved by the reader, each file checked inside the roots as it is opened; trust goes
by the folder of the file that holds the code (symlinks followed), so an include does not carry
code from an untrusted folder into a trusted task.
"""

from __future__ import annotations

import glob
import itertools
from collections.abc import Iterable
from pathlib import Path

from recycler.errors import RecyclerError
from recycler.service.security import AllowedRoots, PathNotAllowed
from recycler.suite import SuiteSpec, task_yaml_files
from recycler.task_yaml import (
    PACKAGED_BUILDERS,
    TaskYaml,
    code_in,
    function_values,
    is_url,
    listed_files,
    opened_paths,
    read_task_yaml,
    unclassified_in,
)

GLOB_CHARACTERS = set("*?[")
MAX_LISTED = 1_000


def check_suite_tasks(suite: SuiteSpec, roots: AllowedRoots) -> dict[Path, TaskYaml]:
    """Every YAML of the task folder, finished (includes merged), by path: PathNotAllowed (403) for
    code outside the roots trusted for it or a file outside the allowed roots, RecyclerError (422)
    for a key a suite run as data may not use; one line naming the task and the key.

    Every YAML of the task folder is checked, not only the suite's tasks: the suite reads them all.
    """
    for task in suite.held_in + suite.held_out:
        for file in listed_files(task.data_files):
            check_local(file, roots, f"suite task '{task.task}': data_files")
    if suite.task_dir is None or not suite.task_dir.is_dir():
        return {}
    data_only = not (suite.task_code and roots.trusts_code(suite.task_dir))
    finished = {}
    for path in task_yaml_files(suite.task_dir):
        relative = path.relative_to(suite.task_dir)
        task = read_task_yaml(path, f"suite.task_dir: {relative}", roots.inside, roots.contains)
        name = next((task.config[key] for key in ("task", "group") if isinstance(task.config.get(key), str)), path.name)
        where = f"suite.task_dir: task '{name}' ({relative})"
        keys = {what: key for key, what in function_values(task.config, "")}
        for file, function, line in task.functions():
            if data_only or not roots.trusts_code(file.path.parent):
                included = "" if file.include is None else f", included {file.include}"
                key = keys.get(f"!function {function}", f"line {line}")
                raise PathNotAllowed(f"{where}{included}: {key} loads Python (!function {function}); its YAML is "
                                     "not under a --trust-task-code root")
        if data_only:
            _check_data_only(task, where)
        for key, value in opened_paths(task.config, path.parent):
            check_local(value, roots, f"{where}: {key}")
        finished[path] = task
    return finished


def _check_data_only(task: TaskYaml, where: str) -> None:
    for key, what in code_in(task.config):
        raise PathNotAllowed(f"{where}: {key} loads Python ({what}); its YAML is not under a --trust-task-code root")
    for key in unclassified_in(task.config):
        raise RecyclerError(f"{where}: {key} is not a task key the service runs from an untrusted folder "
                            "(see recycler/task_yaml.py for those it reads as data)")
    path = task.config.get("dataset_path")
    if path is not None and path not in PACKAGED_BUILDERS:
        raise PathNotAllowed(f"{where}: dataset_path: {path} is not one of {', '.join(PACKAGED_BUILDERS)}; a task from "
                             "an untrusted folder reads local files named by dataset_kwargs.data_files")


def check_local(value: str, roots: AllowedRoots, where: str) -> list[Path]:
    """The files a path (relative to the working folder, as `datasets` takes it) or a glob pattern
    names, resolved: every match, and every file under a folder, inside the allowed roots, at most
    MAX_LISTED of them (a pattern over a huge tree would hold the request); URLs are refused."""
    if is_url(value):
        raise PathNotAllowed(f"{where}: {value} is not a local path (URLs are refused)")
    path = Path(value).expanduser().absolute()
    if "**" in value:  # a recursive pattern walks without bound (and through symlink loops)
        raise RecyclerError(f"{where}: {value}: '**' is not allowed; name each folder level (a '*' per level)")
    if GLOB_CHARACTERS & set(value):
        fixed = next(i for i, part in enumerate(path.parts) if GLOB_CHARACTERS & set(part))
        roots.inside(Path(*path.parts[:fixed]), where)
        matches: Iterable[Path] = (Path(m) for m in glob.iglob(str(path)))
    else:
        matches = [path]
    files = []
    for match in matches:
        files.append(roots.inside(match, where))
        if match.is_dir():
            files.extend(roots.inside(below, where) for below in itertools.islice(match.rglob("*"), MAX_LISTED + 1))
        if len(files) > MAX_LISTED:
            raise RecyclerError(f"{where}: {value} names more than {MAX_LISTED} files")
    return sorted(files)
