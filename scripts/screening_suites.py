"""The suites the screening benchmark (scripts/bench_screening_rules.py) measures on, all on the demo
pool: what each optimizes, over which space, on how many examples, and by which kind of scoring.

- `two`: the demo suite's 9 tasks (100 examples each), `add` and `reverse` as the objectives.
- `six`: the demo suite, its 6 held-in tasks as the objectives.
- `two500`: `add` and `reverse` only, 500 examples each (the demo's own generator; the first 100
  are the demo's): a 20% subset holds 100 examples per task, about what a real suite's subset holds.
- `layerwise`: `two500` over the layer-wise space (a simplex per block of 2 layers and one for the
  rest: 24 parameters against the simplex's 8).
- `generation`: `add` and `reverse` asked as `generate_until` tasks (greedy, exact match on the
  answer), 500 examples each: the generation-heavy case, where cost is forward tokens.
"""

from __future__ import annotations

from pathlib import Path

from bench_generation import TASK
from bench_screening import scaled_demo_suite

from recycler.spec import PoolSpec
from recycler.suite import SuiteSpec, SuiteTask

SUITES = ("two", "six", "two500", "layerwise", "generation")
TWO = ["add", "reverse"]


def suite_spec(spec: PoolSpec, name: str, root: Path) -> PoolSpec:
    """The demo pool's spec changed to suite `name`; `root` keeps generated task files."""
    if name == "two":
        return spec.model_copy(update={"objectives": TWO})
    if name == "six":
        return spec
    scaled = scaled_demo_suite(root, 500, TWO)
    if name == "two500":
        return spec.model_copy(update={"suite": scaled})
    if name == "layerwise":
        return spec.model_copy(update={"suite": scaled,
                                       "search": spec.search.model_copy(update={"space": "layerwise"})})
    if name == "generation":
        return spec.model_copy(update={"suite": _generation_suite(scaled)})
    raise SystemExit(f"--suites: unknown suite '{name}' (known: {', '.join(SUITES)})")


def _generation_suite(scaled: SuiteSpec) -> SuiteSpec:
    folder = Path(scaled.task_dir).parent / "generation-500"
    folder.mkdir(parents=True, exist_ok=True)
    for task in TWO:
        data = Path(scaled.task_dir) / "data" / f"{task}.jsonl"
        (folder / f"{task}_gen.yaml").write_text(TASK.format(name=task, data=data))
    return SuiteSpec(name="demo-generation-500", task_dir=folder, limit=500,
                     held_in=[SuiteTask(task=f"{task}_gen", metric="exact_match,answer") for task in TWO])
