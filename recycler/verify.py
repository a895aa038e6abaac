"""`recycler verify`: an export's files match its manifest, and it scores what its trial scored."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from recycler.errors import RecyclerError
from recycler.export import FACTS_FILE, MANIFEST_FILE, file_checksums
from recycler.suite import SuiteSpec, load_suite

DEFAULT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Verification:
    files: int
    scores: dict[str, tuple[float, float]]  # task -> (recorded, measured)


def check_files(folder: Path) -> int:
    """Every file listed with the sha256 it was written with, and no file unlisted."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise RecyclerError(f"{folder}: no {MANIFEST_FILE}; not a recycler export")
    try:
        expected = json.loads(manifest_path.read_text())["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RecyclerError(f"{manifest_path}: unreadable manifest") from None
    actual = file_checksums(folder)
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            raise RecyclerError(f"{folder / name}: listed in the manifest but missing")
        if name not in expected:
            raise RecyclerError(f"{folder / name}: not listed in the manifest")
        if actual[name] != expected[name]:
            raise RecyclerError(f"{folder / name}: sha256 differs from the manifest (file changed or corrupted)")
    return len(actual)


def rescore(folder: Path, tolerance: float) -> dict[str, tuple[float, float]]:
    """Load the export as any user would, with the engine its study scored with, and score it on
    the suite it was scored on."""
    from recycler.engine import DEFAULT_ENGINE, engine_class
    from recycler.evaluate import Scorer
    from recycler.spec import Resources

    facts = json.loads((folder / FACTS_FILE).read_text())
    if not facts.get("scores") or facts.get("suite") is None:
        raise RecyclerError(f"{folder}: the export records no scores to check against")
    suite_ref = facts["suite"]
    suite = load_suite(SuiteSpec.model_validate(suite_ref) if isinstance(suite_ref, dict) else suite_ref)
    resources = Resources(engine=facts.get("engine", DEFAULT_ENGINE))
    measured = Scorer(suite, engine_class(resources.engine).for_checkpoint(folder, suite, resources)).score().scores
    result = {}
    for task, recorded in facts["scores"].items():
        if task not in measured:
            raise RecyclerError(f"{folder}: task '{task}' is no longer in suite '{suite.spec.name}'")
        if abs(measured[task] - recorded) > tolerance:
            raise RecyclerError(f"{folder}: task '{task}' scores {measured[task]:.6g}, but the trial scored {recorded:.6g} (tolerance {tolerance:g})")
        result[task] = (recorded, measured[task])
    return result


def verify_export(folder: str | Path, *, tolerance: float = DEFAULT_TOLERANCE, scores: bool = True) -> Verification:
    folder = Path(folder)
    files = check_files(folder)
    return Verification(files=files, scores=rescore(folder, tolerance) if scores else {})
