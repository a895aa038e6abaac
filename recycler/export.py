"""Export a merge as a standard HF checkpoint folder, with a model card and a mergekit recipe.

The folder is assembled in a temporary sibling and renamed into place, so a reader never sees
half an export and an interrupted export leaves the target as it was. The target's folder is held
open (recycler.held_folder) and the checkpoint's files are checked where they are opened, so for
the service, a link planted after its path checks neither redirects the export nor copies a file
from outside the allowed roots into it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import yaml

from recycler.engine import DEFAULT_ENGINE
from recycler.errors import RecyclerError
from recycler.files import open_regular, sha256_file
from recycler.held_folder import HeldFolder
from recycler.merge import Merger
from recycler.pool import INDEX_FILE, Pool
from recycler.recipes import MergeRecipe, recipe_from_json

RECIPE_FILE = "mergekit.yaml"
CARD_FILE = "README.md"
MANIFEST_FILE = "manifest.json"
FACTS_FILE = "recycler.json"
# Files of a checkpoint folder that are weights or describe them; everything else (tokenizer,
# generation config) is copied from the pool into the export.
_NOT_COPIED = {INDEX_FILE, "config.json", CARD_FILE, "pytorch_model.bin.index.json"}
_NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# Whether a resolved path lies inside the service's allowed roots; None for the CLI, where the
# user's own links (an HF cache snapshot is all symlinks) are followed.
Inside = Callable[[Path], bool]


def _model_card(pool: Pool, recipe: MergeRecipe, scores: Mapping[str, float] | None) -> str:
    settings = ", ".join(f"{key} {value}" for key, value in recipe.describe().items())
    lines = [
        "---",
        "library_name: transformers",
        "tags: [merge, recycler]",
        "---",
        "",
        "# A merge made by recycler",
        "",
        f"Merge method: `{recipe.method}`" + (f" ({settings})." if settings else "."),
        "",
        f"Pool fingerprint: `{pool.fingerprint()}`",
        "",
        "| checkpoint | path | weight |",
        "|---|---|---|",
    ]
    weights = recipe.checkpoint_weights()
    lines += [f"| {c.name} | {c.path} | {weights.get(c.name, 0.0):.6g} |" for c in pool.checkpoints]
    if pool.base is not None:
        lines += ["", f"Base: `{pool.base.name}` ({pool.base.path})."]
    if scores:
        lines += ["", "## Scores", "", "| task | score |", "|---|---|"]
        lines += [f"| {task} | {value:.4f} |" for task, value in scores.items()]
    lines += ["", f"Reproduce with mergekit: `mergekit-yaml {RECIPE_FILE} OUTPUT_DIR`.", ""]
    return "\n".join(lines)


def check_export_target(out_dir: Path, overwrite: bool, *, parent: HeldFolder | None = None) -> None:
    """Refuse a target that is a file or a link, or a non-empty folder unless overwrite. With
    `parent` (out_dir's folder, held open), out_dir's name is looked up there, not by path."""
    at = parent.path / out_dir.name if parent else out_dir
    try:
        mode = at.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there yet; the folder on the way is checked as it is made
        return
    if stat.S_ISLNK(mode):
        raise RecyclerError(f"{out_dir}: export target is a symbolic link")
    if not stat.S_ISDIR(mode):
        raise RecyclerError(f"{out_dir}: export target exists and is not a folder")
    if not overwrite and any(at.iterdir()):
        raise RecyclerError(f"{out_dir}: export target is not empty (pass --force to replace it)")


def export_merge(
    merger: Merger,
    recipe: MergeRecipe,
    out_dir: str | Path,
    *,
    scores: Mapping[str, float] | None = None,
    suite: str | dict | None = None,
    engine: str = DEFAULT_ENGINE,
    max_shard_size: str | int = "2GB",
    overwrite: bool = False,
    inside: Inside | None = None,
) -> Path:
    """Materialize the recipe in the resident model and write it as an HF checkpoint folder.

    `suite` (a suite name, path or inline mapping), `engine` (what scored it) and `scores` let
    `recycler verify` re-score it as its study did. With `inside` (the service), the export folder
    must be reached without links and every copied file must lie inside; a linked one is listed in
    the manifest.
    """
    # The service's path is taken as written (no link may be on the way); the CLI's links are followed.
    out_dir = Path(os.path.normpath(Path(out_dir).absolute())) if inside else Path(out_dir).resolve()
    pool = merger.pool
    recipe.check(pool)
    if inside is not None and not inside(out_dir.parent):  # before any folder on the way is made
        raise RecyclerError(f"{out_dir}: export target is outside the allowed roots")
    with HeldFolder.open(out_dir.parent, create=True) as parent:
        if inside is not None and not inside(parent.real_path()):  # where the held folder is, whatever moved
            raise RecyclerError(f"{out_dir}: export target is outside the allowed roots")
        check_export_target(out_dir, overwrite, parent=parent)
        staging_name = parent.make_hidden(f".{out_dir.name}.")
        try:
            with parent.child(staging_name) as staging:
                _write(merger, recipe, staging, scores=scores, suite=suite, engine=engine,
                       max_shard_size=max_shard_size, inside=inside)
            _replace(parent, staging_name, out_dir.name)
        except BaseException:
            parent.remove_tree(staging_name)
            raise
    return out_dir


def _write(merger: Merger, recipe: MergeRecipe, staging: HeldFolder, *, scores: Mapping[str, float] | None,
           suite: str | dict | None, engine: str, max_shard_size: str | int, inside: Inside | None) -> None:
    pool = merger.pool
    with ExitStack() as stack:
        sources: dict[str, IO[bytes]] = {}
        linked: dict[str, str] = {}
        for item in _copied(pool.reference.path):  # opened and checked first, so a bad link fails before the merge
            fd = _open_regular(item, inside)
            if fd is None:
                continue
            sources[item.name] = stack.enter_context(os.fdopen(fd, "rb"))
            if inside is not None and item.is_symlink():
                linked[item.name] = str(_real_path(fd))
        if "config.json" not in sources:
            raise RecyclerError(f"{pool.reference.path}: the reference checkpoint has no config.json file")
        merger.apply(recipe).save_pretrained(str(staging.path), max_shard_size=max_shard_size, safe_serialization=True)
        for name, source in sources.items():
            with staging.create(name) as copy:  # in place of what save_pretrained wrote (config.json)
                shutil.copyfileobj(source, copy)
    files = {RECIPE_FILE: yaml.safe_dump(recipe.mergekit_config(pool), sort_keys=False),
             CARD_FILE: _model_card(pool, recipe, scores),
             FACTS_FILE: json.dumps({"fingerprint": pool.fingerprint(), "method": recipe.method, "recipe": recipe.to_json(),
                                     "scores": dict(scores or {}), "suite": suite, "engine": engine}, indent=2)}
    for name, text in files.items():
        with staging.create(name) as handle:
            handle.write(text.encode())
    with staging.create(MANIFEST_FILE) as handle:
        handle.write(json.dumps({"sha256": file_checksums(staging.path), "linked": linked}, indent=2).encode())
    os.fchmod(staging.fd, 0o755)


def _copied(source: Path) -> list[Path]:
    """The checkpoint's files that go into the export as they are, config.json last."""
    names = sorted(p.name for p in source.iterdir() if p.name not in _NOT_COPIED and not p.name.endswith(_NOT_COPIED_SUFFIXES))
    return [source / name for name in [*names, "config.json"]]


def _open_regular(item: Path, inside: Inside | None) -> int | None:
    """A descriptor of the regular file `item` names, or None for an entry to skip (a folder, a FIFO,
    a dangling link), never opened. With `inside`, a link is opened at its resolved path without
    following any further link, and a link to outside, a dangling one or one to no regular file is
    an error; the descriptor itself is checked, so a swap between the check and the open is caught."""
    is_link = item.is_symlink()
    try:
        mode = item.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is None or not stat.S_ISREG(mode):
        if inside is not None and is_link:
            raise RecyclerError(f"{item}: a link to no regular file; the checkpoint's files must lie inside the allowed roots")
        return None
    return open_regular(item, f"reference checkpoint file {item.name}", inside)


def _real_path(fd: int) -> Path:
    return Path(os.readlink(f"/proc/self/fd/{fd}"))


def file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file in the folder but the manifest, by name."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}


def _replace(parent: HeldFolder, staging: str, name: str) -> None:
    """Rename staging onto name; an existing target is moved aside first and removed after."""
    if parent.entry(name) is None:
        parent.rename(staging, name)
        return
    retired = parent.make_hidden(f".{name}.old.")
    with parent.child(retired) as aside:
        parent.rename(name, "export", into=aside)
    parent.rename(staging, name)
    parent.remove_tree(retired)


def export_trial(
    study_dir: Path, which: int | str, out_dir: Path, *, max_shard_size: str | int = "2GB", overwrite: bool = False,
    inside: Inside | None = None,
) -> Path:
    """Export a completed trial of a study (by number) or a baseline scored beside it (by name),
    with its scores in the model card; `inside` as for export_merge."""
    from recycler.pool import load_pool
    from recycler.records import StoredTrial, side_baselines
    from recycler.study import load_study

    study, info = load_study(study_dir)
    if isinstance(which, str):
        baselines = {label: b for label, b in side_baselines(study).items() if b.scores is not None}
        if which not in baselines:
            raise RecyclerError(f"{study_dir}: no baseline '{which}' scored beside the search (has: {', '.join(baselines) or 'none'})")
        recipe_json, scores = baselines[which].recipe, baselines[which].scores
    else:
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        if which not in trials:
            raise RecyclerError(f"{study_dir}: trial {which} is not in the study (trials 0-{len(trials) - 1})")
        trial = StoredTrial.of(trials[which])
        if not trial.complete:
            raise RecyclerError(f"{study_dir}: trial {which} did not complete ({trial.state.name.lower()})")
        recipe_json, scores = trial.recipe, trial.scores
    pool = load_pool(info.pool_spec)
    if pool.fingerprint() != info.fingerprint:
        raise RecyclerError(f"{study_dir}: the pool's files changed since the study (fingerprint {pool.fingerprint()[:12]}, study {info.fingerprint[:12]})")
    return export_merge(
        Merger(pool), recipe_from_json(recipe_json), out_dir, scores=scores, suite=info.spec["suite"],
        engine=info.spec["resources"].get("engine", DEFAULT_ENGINE), max_shard_size=max_shard_size, overwrite=overwrite,
        inside=inside,
    )
