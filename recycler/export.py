"""Export a merge as a standard HF checkpoint folder, with a model card and a mergekit recipe.

The folder is assembled in a temporary sibling and renamed into place, so a reader never sees
half an export and an interrupted export leaves the target as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from recycler.engine import DEFAULT_ENGINE
from recycler.errors import RecyclerError
from recycler.files import sha256_file
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


def check_export_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse a target that is a file, or a non-empty folder unless overwrite."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RecyclerError(f"{out_dir}: export target exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
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
) -> Path:
    """Materialize the recipe in the resident model and write it as an HF checkpoint folder.

    `suite` (a suite name, path or inline mapping), `engine` (what scored it) and `scores` let
    `recycler verify` re-score it as its study did.
    """
    out_dir = Path(out_dir).resolve()
    check_export_target(out_dir, overwrite)
    pool = merger.pool
    recipe.check(pool)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        merger.apply(recipe).save_pretrained(staging, max_shard_size=max_shard_size, safe_serialization=True)
        source = pool.reference.path
        for item in source.iterdir():
            if item.is_file() and item.name not in _NOT_COPIED and not item.name.endswith(_NOT_COPIED_SUFFIXES):
                shutil.copy2(item, staging / item.name)
        shutil.copy2(source / "config.json", staging / "config.json")
        (staging / RECIPE_FILE).write_text(yaml.safe_dump(recipe.mergekit_config(pool), sort_keys=False))
        (staging / CARD_FILE).write_text(_model_card(pool, recipe, scores))
        facts = {"fingerprint": pool.fingerprint(), "method": recipe.method, "recipe": recipe.to_json(),
                 "scores": dict(scores or {}), "suite": suite, "engine": engine}
        (staging / FACTS_FILE).write_text(json.dumps(facts, indent=2))
        (staging / MANIFEST_FILE).write_text(json.dumps({"sha256": file_checksums(staging)}, indent=2))
        os.chmod(staging, 0o755)
        _replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file in the folder but the manifest, by name."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}


def _replace(staging: Path, out_dir: Path) -> None:
    """Rename staging onto out_dir; an existing target is moved aside first and removed after."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
    out_dir.rename(retired / "export")
    staging.rename(out_dir)
    shutil.rmtree(retired, ignore_errors=True)


def export_trial(
    study_dir: Path, which: int | str, out_dir: Path, *, max_shard_size: str | int = "2GB", overwrite: bool = False
) -> Path:
    """Export a completed trial of a study (by number) or a baseline scored beside it (by name),
    with its scores in the model card."""
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
    )
