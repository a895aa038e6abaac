"""Check what the README claims of the demo pool, on fresh searches of it (one per seed).

For each seed: a study like the demo's (`recycler demo`'s space, sampler, trials and workers), then
- merges that dominate the uniform average on every held-in task,
- how many checkpoints the front's merges use (weight >= 0.05),
- whether each merge method of the literature, scored beside the search, is dominated by the front
  or on it (dominated by no trial),
- whether merges generalize: the best front merge against the best single checkpoint on the held-out
  tasks (each side picked by its held-out mean, so both are picked alike), and the most balanced
  front member (picked on held-in scores only, as the demo exports it).

Usage: python scripts/demo_claims.py [--pool recycler-demo/pool/pool.yaml] [--seeds 0 1 2] [--out DIR]
Prints one block per seed and writes DIR/claims.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from recycler.baselines import UNIFORM
from recycler.cli import quiet_libraries
from recycler.front import dominates, front_records, most_balanced
from recycler.records import FrontEntry
from recycler.search import run_search
from recycler.spec import load_spec
from recycler.study import StudyInfo, load_study

REPO_ROOT = Path(__file__).resolve().parent.parent
USED = 0.05  # a weight at least this large counts as the checkpoint being used


def held_out_mean(record: FrontEntry, info: StudyInfo) -> float:
    return statistics.fmean(record["scores"][task] for task in info.held_out)


def claims(records: list[FrontEntry], info: StudyInfo) -> dict[str, object]:
    """The README's claims of one study, each as numbers."""
    by_label = {r["baseline_name"]: r for r in records if r["baseline"]}
    merges = [r for r in records if r["on_front"] and not r["baseline"]]
    held_in = lambda r: [r["scores"][task] for task in info.objectives]  # noqa: E731
    uniform = by_label[UNIFORM]
    methods = {label: r for label, r in by_label.items() if label not in info.checkpoints and label != UNIFORM}
    trials = [r for r in records if r["trial"] is not None]
    singles = [by_label[name] for name in info.checkpoints]
    best_single = max(singles, key=lambda r: held_out_mean(r, info))
    best_merge = max(merges, key=lambda r: held_out_mean(r, info)) if merges else None
    balanced = most_balanced(records, info)
    used = [sum(1 for w in r["weights"].values() if w >= USED) for r in merges]
    return {
        "front": sum(r["on_front"] for r in records),
        "front_merges": len(merges),
        "merges_dominating_uniform": sum(dominates(held_in(r), held_in(uniform), info.directions) for r in merges),
        "checkpoints_used_median": statistics.median(used) if used else 0,
        "checkpoints_used_by_some_merge": len({n for r in merges for n, w in r["weights"].items() if w >= USED}),
        "checkpoints": len(info.checkpoints),
        "methods_dominated_or_on_front": {
            label: bool(r["beaten_by_front"]) or not any(dominates(held_in(t), held_in(r), info.directions) for t in trials)
            for label, r in methods.items()
        },
        "held_out_best_single": {"checkpoint": best_single["baseline_name"], "mean": held_out_mean(best_single, info),
                                 **{t: best_single["scores"][t] for t in info.held_out}},
        "held_out_best_front_merge": None if best_merge is None else {
            "trial": best_merge["trial"], "mean": held_out_mean(best_merge, info),
            **{t: best_merge["scores"][t] for t in info.held_out}},
        "held_out_most_balanced": {"trial": balanced["trial"], "mean": held_out_mean(balanced, info),
                                   **{t: balanced["scores"][t] for t in info.held_out}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=REPO_ROOT / "recycler-demo" / "pool" / "pool.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("demo-claims"))
    args = parser.parse_args()
    quiet_libraries()
    spec = load_spec(args.pool)
    results = {}
    for seed in args.seeds:
        seeded = spec.model_copy(update={
            "search": spec.search.model_copy(update={"trials": args.trials, "seed": seed}),
            "resources": spec.resources.model_copy(update={"workers": args.workers}),
        })
        study_dir = args.out / f"seed-{seed}"
        started = time.perf_counter()
        run_search(seeded, study_dir, progress=False)
        study, info = load_study(study_dir)
        results[seed] = {"search_seconds": round(time.perf_counter() - started, 1), **claims(front_records(study, info), info)}
        print(f"seed {seed}: {json.dumps(results[seed], indent=1)}", flush=True)
    (args.out / "claims.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
