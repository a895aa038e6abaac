"""Which files a submitted pool spec would make the service read, checked against the allowed roots
before any of them is opened."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

from recycler.errors import RecyclerError
from recycler.pool import INDEX_FILE
from recycler.references import is_file_reference
from recycler.service.security import AllowedRoots, PathNotAllowed
from recycler.spec import PoolSpec
from recycler.suite import SuiteSpec
from recycler.yaml_files import read_text_file

MAX_INDEX_BYTES = 64 << 20
MAX_CHECKPOINT_FILES = 1_000  # a 100B-parameter checkpoint has a few hundred shards


def _raw_paths(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for i, ref in enumerate(data.get("checkpoints") or []):
        if isinstance(ref, dict):
            yield f"checkpoints.{i}.path", ref.get("path")
    if isinstance(data.get("base"), dict):
        yield "base.path", data["base"].get("path")
    suite = data.get("suite")
    yield ("suite.task_dir", suite.get("task_dir")) if isinstance(suite, dict) else ("suite", suite)
    if isinstance(data.get("search"), dict):
        yield "search.space", data["search"].get("space")


def refuse_parent_parts(data: dict[str, Any]) -> None:
    """No `..` in any path as written, even one that would land inside a root."""
    for where, value in _raw_paths(data):
        if isinstance(value, str) and ".." in PurePath(value).parts:
            raise PathNotAllowed(f"{where}: '..' is not allowed in paths ({value})")


def check_spec_paths(spec: PoolSpec, roots: AllowedRoots) -> None:
    """Every checkpoint (each of its files), the base, a suite file and its task folder, and a space
    file must lie under an allowed root (after symlinks); the suite's tasks are checked apart
    (recycler/service/task_check.py). A file is read only once it has passed."""
    from recycler.suite import load_suite

    refs = [(f"checkpoints.{i}.path", ref.path) for i, ref in enumerate(spec.checkpoints)]
    if spec.base is not None:
        refs.append(("base.path", spec.base.path))
    for where, path in refs:
        check_checkpoint_files(roots.check(path, where), roots, where)
    if is_file_reference(spec.search.space):
        roots.check(spec.search.space, "search.space")
    suite = spec.suite
    if isinstance(suite, str) and is_file_reference(suite):
        roots.check(suite, "suite")
        suite = load_suite(suite).spec
    if isinstance(suite, SuiteSpec) and suite.task_dir is not None:
        roots.check(suite.task_dir, "suite.task_dir")


def check_checkpoint_files(folder: Path, roots: AllowedRoots, where: str) -> None:
    """Every file of a checkpoint folder (what workers read and exports copy) is a regular file whose
    real path lies inside the roots, and every shard its index names is a file of the folder itself:
    a `config.json` linked to a file elsewhere, or an index naming `/etc/...`, is refused."""
    if not folder.is_dir():
        return  # the pool's own validation names what is missing
    entries = list(itertools.islice(folder.iterdir(), MAX_CHECKPOINT_FILES + 1))
    if len(entries) > MAX_CHECKPOINT_FILES:
        raise RecyclerError(f"{where}: more than {MAX_CHECKPOINT_FILES} files in the checkpoint folder")
    for entry in sorted(entries):
        resolved = roots.inside(entry, f"{where}: {entry.name}")
        if not resolved.is_dir() and not resolved.is_file():
            raise RecyclerError(f"{where}: {entry.name} is not a regular file")
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            shards = set(json.loads(read_text_file(index, f"{where}: {INDEX_FILE}", MAX_INDEX_BYTES))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RecyclerError(f"{where}: {INDEX_FILE} is not a safetensors index") from None
        for shard in sorted(map(str, shards)):
            if PurePath(shard).name != shard or shard in ("", ".", ".."):
                raise PathNotAllowed(f"{where}: {INDEX_FILE} names shard {shard}, which is not a file of the checkpoint folder")
