"""A candidate's example answers beside a baseline's, task by task, for a person to read: what
`recycler front --examples N`, the report and the service page show of the per-example results
kept in the study folder. Only generation tasks are shown (a loglikelihood task has no answer to
read); examples where the two answers differ come first, since identical answers say nothing about
a merge.
"""

from __future__ import annotations

from pathlib import Path

from recycler.errors import RecyclerError
from recycler.examples import (
    ExampleText,
    read_prompts,
    read_results,
    results_kept,
)
from recycler.records import (
    ExampleComparison,
    ExampleRow,
    FrontEntry,
    TaskComparison,
    entry_key,
)
from recycler.results import TaskExamples
from recycler.selection import rank
from recycler.study import StudyInfo


def candidate_name(entry: FrontEntry) -> str:
    """How a person names a candidate: 'trial 12', 'trial 0 (c0)', 'baseline slerp'."""
    if entry["trial"] is None:
        return f"baseline {entry['baseline_name']}"
    return f"trial {entry['trial']}" + (f" ({entry['baseline_name']})" if entry["baseline"] else "")


def find_candidate(records: list[FrontEntry], *, trial: int | None = None, baseline: str | None = None) -> FrontEntry:
    """A completed trial by number, or a baseline (a trial, or scored beside the search) by name."""
    if (trial is None) == (baseline is None):
        raise RecyclerError("name one trial or one baseline")
    for entry in records:
        if (entry["trial"] == trial) if trial is not None else (entry["baseline_name"] == baseline):
            return entry
    if trial is not None:
        raise RecyclerError(f"trial {trial} is not a completed trial of the study")
    names = ", ".join(r["baseline_name"] for r in records if r["baseline"])
    raise RecyclerError(f"no baseline '{baseline}' in the study (has: {names})")


def default_beside(study_dir: Path, records: list[FrontEntry], info: StudyInfo, candidate: FrontEntry) -> str | None:
    """The best baseline other than the candidate that kept its examples: the most balanced one
    (best worst objective, normalized over the baselines), the strongest simple alternative."""
    kept = [r for r in records if r["baseline"] and r["baseline_name"] != candidate["baseline_name"]
            and results_kept(study_dir, entry_key(r))]
    return rank(kept, info, None)[0]["baseline_name"] if kept else None


def _task(results: TaskExamples, texts: list[ExampleText], theirs: TaskExamples | None, count: int) -> TaskComparison:
    answers = theirs.answers if theirs is not None else None
    rows = [
        ExampleRow(index=i, prompt=text["prompt"], target=text["target"], answer=answer, score=score,
                   beside_answer=answers[i] if answers else None, beside_score=theirs.scores[i] if answers else None)
        for i, (text, answer, score) in enumerate(zip(texts, results.answers, results.scores))
    ]
    if not answers:
        return TaskComparison(total=len(rows), differ=None, examples=rows[:count])
    differ = [row for row in rows if row["answer"] != row["beside_answer"]]
    same = [row for row in rows if row["answer"] == row["beside_answer"]]
    return TaskComparison(total=len(rows), differ=len(differ), examples=(differ + same)[:count])


class _Reader:
    """The prompts and the baseline's results, read once for every candidate compared to it."""

    def __init__(self, study_dir: Path, records: list[FrontEntry], beside: str | None) -> None:
        self.study_dir, self.beside = study_dir, beside
        self.prompts = read_prompts(study_dir)
        self.theirs = read_results(study_dir, entry_key(find_candidate(records, baseline=beside))) if beside is not None else None

    def compare(self, candidate: FrontEntry, count: int) -> ExampleComparison:
        results = read_results(self.study_dir, entry_key(candidate))
        if results is None or self.prompts is None:
            return ExampleComparison(beside=self.beside, kept=False, tasks={})
        tasks = {
            task: _task(r, self.prompts.get(task, []), (self.theirs or {}).get(task), count)
            for task, r in results.items() if r.answers is not None
        }
        return ExampleComparison(beside=self.beside, kept=True, tasks=tasks)


def compare(study_dir: Path, records: list[FrontEntry], candidate: FrontEntry, beside: str | None, count: int) -> ExampleComparison:
    """Up to `count` examples per generation task of the candidate beside the baseline named (None:
    no baseline column); `kept` is false where the study kept none of the candidate's results."""
    return _Reader(study_dir, records, beside).compare(candidate, count)


def with_examples(study_dir: Path, records: list[FrontEntry], info: StudyInfo, count: int | None,
                  beside: str | None = None) -> list[FrontEntry]:
    """The records, each merge and front member carrying up to `count` examples per generation task
    beside the baseline named (default: the best other one that kept its examples); baselines
    listed for reference carry none. As they are when count is None."""
    if count is None:
        if beside is not None:
            raise RecyclerError("--beside: only with --examples N")
        return records
    if count < 1:
        raise RecyclerError(f"--examples {count}: must be at least 1")
    readers: dict[str | None, _Reader] = {}

    def examples(candidate: FrontEntry) -> ExampleComparison:
        label = beside if beside is not None else default_beside(study_dir, records, info, candidate)
        if label not in readers:
            readers[label] = _Reader(study_dir, records, label)
        return readers[label].compare(candidate, count)

    return [FrontEntry(**r, examples=examples(r)) if r["on_front"] or not r["baseline"] else r for r in records]


def examples_text(record: FrontEntry) -> str:
    """A candidate's example answers beside the baseline's as text: one table per generation task."""
    import pandas as pd

    comparison, name = record["examples"], candidate_name(record)
    if not comparison["kept"]:
        return f"\n{name}: no per-example results kept"
    if not comparison["tasks"]:
        return f"\n{name}: no generation task to show answers of"
    beside = f" beside {comparison['beside']}" if comparison["beside"] else ""
    blocks = []
    for task, shown in comparison["tasks"].items():
        rows = []
        for row in shown["examples"]:
            cells = {"#": row["index"], "prompt": _cell(row["prompt"]), "target": _cell(row["target"]), name: _cell(row["answer"])}
            if row["beside_answer"] is not None:
                cells[comparison["beside"]] = _cell(row["beside_answer"])
            rows.append(cells)
        differ = f", {shown['differ']} of {shown['total']} answers differ" if shown["differ"] is not None else ""
        blocks.append(f"\n{name}{beside}, {task}{differ}:\n{pd.DataFrame(rows).to_string(index=False)}")
    return "".join(blocks)


def _cell(text: str, width: int = 40) -> str:
    """Text on one line, its end kept when it is long (a prompt's question is at its end)."""
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else "…" + text[-(width - 1):]
