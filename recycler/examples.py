"""Per-example results of every scored candidate, kept in the study folder so its scores can be
audited and compared example by example.

    STUDY/examples/prompts.json           each task's examples (prompt, target), written once per study
    STUDY/examples/trial-000012.json      a completed trial's results
    STUDY/examples/baseline-ties.json     a baseline scored beside the search

A result file holds, per task, each example's score and, for a generation task, its answer after the
task's filters, in the order of prompts.json (`TaskExamples` in its JSON form, recycler/results.py). They are files rather than Optuna user attributes
because Optuna reads every attribute of every trial each time a study is loaded. A study from before
they were kept has no such files: readers get None and show no examples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

from recycler.errors import RecyclerError
from recycler.files import write_text_atomic
from recycler.results import TaskExamples

EXAMPLES_DIR = "examples"
PROMPTS_FILE = "prompts.json"


class ExampleText(TypedDict):
    prompt: str
    target: str


def _folder(study_dir: Path) -> Path:
    return Path(study_dir) / EXAMPLES_DIR


def _results_file(study_dir: Path, key: int | str) -> Path:
    """A trial's file (by number) or a side baseline's (by label)."""
    name = f"trial-{key:06d}" if isinstance(key, int) else f"baseline-{key}"
    return _folder(study_dir) / f"{name}.json"


def _dump(data: object) -> str:
    return json.dumps(data, separators=(",", ":"))


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise RecyclerError(f"{path}: unreadable examples file ({error})") from None


def prompts_kept(study_dir: Path) -> bool:
    return (_folder(study_dir) / PROMPTS_FILE).is_file()


def write_prompts(study_dir: Path, texts: dict[str, list[ExampleText]]) -> None:
    write_text_atomic(_folder(study_dir) / PROMPTS_FILE, _dump(texts))


def read_prompts(study_dir: Path) -> dict[str, list[ExampleText]] | None:
    return _load(_folder(study_dir) / PROMPTS_FILE)


def write_results(study_dir: Path, key: int | str, results: dict[str, TaskExamples]) -> None:
    """A candidate's per-example results: a trial by number, a side baseline by label."""
    write_text_atomic(_results_file(study_dir, key), _dump({task: r.to_json() for task, r in results.items()}))


def results_kept(study_dir: Path, key: int | str) -> bool:
    return _results_file(study_dir, key).is_file()


def read_results(study_dir: Path, key: int | str) -> dict[str, TaskExamples] | None:
    """A candidate's per-example results, or None where none were kept."""
    results = _load(_results_file(study_dir, key))
    if results is None:
        return None
    return {task: TaskExamples.from_json(r) for task, r in results.items()}
