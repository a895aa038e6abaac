"""Time the demo pool's build against the recipe it replaced, in one run (BENCHMARKS §12).

The previous recipe (a width-128 model, 1,200 base steps, 250-500-step branches) is kept here only
as the reference: both are built from scratch into temporary folders, one after the other, with the
same skills, and their times are reported with their ratio.

Usage: python scripts/bench_demo_build.py [--out scripts/bench_data/demo_build.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from recycler.cli import quiet_libraries
from recycler.demo.build import DEMO_RECIPE, SINGLE_SKILLS, Branch, Recipe, build_demo_pool

PREVIOUS_RECIPE = Recipe(
    width=128,
    base_steps=1200,
    early_step=300,
    base_mixture={**{name: 1.0 for name in SINGLE_SKILLS}, "chains": 1.5},
    branches=(
        Branch("arith", {"add": 1.0, "count": 1.0}, lr=1e-3, steps=250),
        Branch("order", {"reverse": 1.0, "sort": 1.0}, lr=1e-3, steps=250),
        Branch("letters", {"upper": 1.0, "double": 1.0}, lr=1e-3, steps=250),
        Branch("add", {"add": 1.0}, lr=1e-3, steps=250),
        Branch("sort_count", {"sort": 1.0, "count": 1.0}, lr=3e-4, steps=250),
        Branch("mixed", {"upper": 1.0, "double": 1.0, "add": 1.0, "chains": 0.5}, lr=1e-3, steps=250),
        Branch("reverse_long", {"reverse": 1.0}, lr=2e-3, steps=500),
    ),
)


def timed_build(recipe: Recipe, root: Path) -> float:
    started = time.perf_counter()
    build_demo_pool(root / "pool", force=True, recipe=recipe)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("scripts/bench_data/demo_build.json"))
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as previous, tempfile.TemporaryDirectory() as current:
        seconds = {"previous": timed_build(PREVIOUS_RECIPE, Path(previous)), "demo": timed_build(DEMO_RECIPE, Path(current))}
    result = {**{k: round(v, 1) for k, v in seconds.items()}, "ratio": round(seconds["demo"] / seconds["previous"], 3)}
    print(json.dumps(result))
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
