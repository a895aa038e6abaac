"""A submitted study's suite, copied at submission into the service's data folder, so the study runs
from what was checked and nothing changed in the roots afterwards is read.

Each task YAML of an untrusted task folder is written back finished (includes merged by
recycler's data-only reader, plain YAML, `task_code: false`), beside a copy of every data file it
names; the shipped tasks' local `data_files` are copied too. Every file is copied from a descriptor
whose real path was checked inside the roots (`recycler.files.open_regular`), with bounds on their number and size.
A folder trusted for code runs in place (its Python imports its neighbours) and is checked again
when the study starts.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from recycler.errors import RecyclerError, format_bytes
from recycler.files import open_regular
from recycler.service.security import AllowedRoots
from recycler.service.task_check import GLOB_CHARACTERS, check_local, check_suite_tasks
from recycler.spec import PoolSpec
from recycler.suite import SuiteSpec, SuiteTask
from recycler.task_yaml import absolute_data_files

_SafeDumper = yaml.CSafeDumper if getattr(yaml, "__with_libyaml__", False) else yaml.SafeDumper  # 10x faster
MAX_SNAPSHOT_BYTES = 1 << 30
MAX_SNAPSHOT_FILES = 1_000


class _Copier:
    """Copies checked files into one snapshot folder, each once, within the byte bound."""

    def __init__(self, roots: AllowedRoots, folder: Path) -> None:
        self.roots = roots
        self.data = folder / "data"
        self.data.mkdir(parents=True)
        self.copies: dict[Path, Path] = {}
        self.size = 0

    def files(self, value: Any, folder: Path, where: str) -> Any:
        """A `data_files` value with each path (or glob) replaced by the copies of what it names."""
        if isinstance(value, str):
            copies = [str(self.copy(file, where)) for file in check_local(absolute_data_files(value, folder), self.roots, where)
                      if not file.is_dir()]
            if not copies:
                raise RecyclerError(f"{where}: {value} names no file")
            return copies[0] if len(copies) == 1 and not GLOB_CHARACTERS & set(value) else copies
        if isinstance(value, list):
            return [copy for v in value for copy in _as_list(self.files(v, folder, where))]
        if isinstance(value, dict):
            return {split: self.files(v, folder, where) for split, v in value.items()}
        return value

    def copy(self, file: Path, where: str) -> Path:
        if file in self.copies:
            return self.copies[file]
        if len(self.copies) == MAX_SNAPSHOT_FILES:
            raise RecyclerError(f"{where}: the suite names more than {MAX_SNAPSHOT_FILES} files, the most a submitted "
                                "suite may copy")
        target = self.data / f"{len(self.copies)}-{re.sub(r'[^A-Za-z0-9._-]', '_', file.name)}"  # never a pattern
        descriptor = open_regular(file, where, self.roots.contains)
        with os.fdopen(descriptor, "rb") as source, open(target, "xb") as copy:
            if os.fstat(source.fileno()).st_nlink > 1:
                raise RecyclerError(f"{where}: {file} has other hard links (a name for a file that may lie outside the roots)")
            while chunk := source.read(1 << 20):
                self.size += len(chunk)
                if self.size > MAX_SNAPSHOT_BYTES:
                    raise RecyclerError(f"{where}: the suite's files pass {format_bytes(MAX_SNAPSHOT_BYTES)}, the most a "
                                        "submitted suite may copy")
                copy.write(chunk)
        self.copies[file] = target
        return target


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def snapshot_spec(spec: PoolSpec, roots: AllowedRoots, snapshots: Path) -> PoolSpec:
    """The spec the service stores and runs: checkpoints named by their real paths, and the suite
    (checked on the way) as a copy in a new folder under `snapshots`; nothing is left there if
    anything fails."""
    from recycler.suite import load_suite

    checkpoints = [ref.model_copy(update={"path": ref.path.resolve()}) for ref in spec.checkpoints]
    base = spec.base.model_copy(update={"path": spec.base.path.resolve()}) if spec.base is not None else None
    suite = load_suite(spec.suite).spec if isinstance(spec.suite, str) else spec.suite
    snapshots.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="suite-", dir=snapshots))
    try:
        copied = _snapshot_suite(suite, roots, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return spec.model_copy(update={"checkpoints": checkpoints, "base": base, "suite": copied})


def _snapshot_suite(suite: SuiteSpec, roots: AllowedRoots, folder: Path) -> SuiteSpec | str:
    finished = check_suite_tasks(suite, roots)
    copier = _Copier(roots, folder)
    tasks = {role: [_copied_task(task, copier) for task in getattr(suite, role)] for role in ("held_in", "held_out")}
    if suite.task_dir is None or (suite.task_code and roots.trusts_code(suite.task_dir)):
        return suite.model_copy(update=tasks)
    task_dir = folder / "tasks"
    for path, task in finished.items():
        config = dict(task.config)
        kwargs = config.get("dataset_kwargs")
        relative = path.relative_to(suite.task_dir)
        if isinstance(kwargs, dict) and "data_files" in kwargs:
            where = f"suite.task_dir: {relative}: dataset_kwargs.data_files"
            config["dataset_kwargs"] = {**kwargs, "data_files": copier.files(kwargs["data_files"], path.parent, where)}
        (task_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (task_dir / relative).write_text(yaml.dump(config, Dumper=_SafeDumper, sort_keys=False))
    return suite.model_copy(update={**tasks, "task_dir": task_dir, "task_code": False})


def _copied_task(task: SuiteTask, copier: _Copier) -> SuiteTask:
    if task.data_files is None:
        return task
    where = f"suite task '{task.task}': data_files"
    files = copier.files(task.data_files, Path.cwd(), where)
    if any(isinstance(copies, list) for copies in _as_list(files) + list(files.values() if isinstance(files, dict) else [])):
        raise RecyclerError(f"{where}: name one file per split (a pattern or a folder is for task YAMLs)")
    return task.model_copy(update={"data_files": files})
