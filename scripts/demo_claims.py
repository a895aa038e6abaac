"""Check what the README claims of the demo pool, on fresh searches of it (one per seed).

For each seed: a study like the demo's (`recycler demo`'s space, sampler, trials and workers), then
- merges that dominate the uniform average on every held-in task,
- how many checkpoints the front's merges use (weight >= 0.05),
- which merge methods of the literature, scored beside the search at their defaults, a front member
  dominates (a method no front member dominates would join the front),
- whether merges generalize: per held-out task, the best front merge's score against the best single
  checkpoint's (each the best of its side on that task: the merges are more to choose from, which
  favours them), and the scores of the most balanced front member (picked on held-in scores only,
  as the demo exports it).

Usage: python scripts/demo_claims.py [--pool recycler-demo/pool/pool.yaml] [--seeds 0 1 2] [--out recycler-demo/claims]
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
from recycler.front import front_records
from recycler.pareto import dominates
from recycler.records import FrontEntry
from recycler.search import run_search
from recycler.selection import most_balanced
from recycler.spec import load_spec
from recycler.study import StudyInfo, load_study

REPO_ROOT = Path(__file__).resolve().parent.parent
USED = 0.05  # a weight at least this large counts as the checkpoint being used


def claims(records: list[FrontEntry], info: StudyInfo) -> dict[str, object]:
    """The README's claims of one study, each as numbers."""
    by_label = {r["baseline_name"]: r for r in records if r["baseline"]}
    merges = [r for r in records if r["on_front"] and not r["baseline"]]
    held_in = lambda r: [r["scores"][task] for task in info.objectives]  # noqa: E731
    uniform = by_label[UNIFORM]
    methods = {label: r for label, r in by_label.items() if label not in info.checkpoints and label != UNIFORM}
    singles = [by_label[name] for name in info.checkpoints]
    balanced = most_balanced(records, info)
    used = [sum(1 for w in r["weights"].values() if w >= USED) for r in merges]
    held_out = {}
    for task in info.held_out:
        single = max(singles, key=lambda r: r["scores"][task])
        merge = max(merges, key=lambda r: r["scores"][task]) if merges else None
        held_out[task] = {"best_single": single["scores"][task], "checkpoint": single["baseline_name"],
                          "best_front_merge": None if merge is None else merge["scores"][task],
                          "trial": None if merge is None else merge["trial"], "most_balanced": balanced["scores"][task]}
    return {
        "front": sum(r["on_front"] for r in records),
        "front_merges": len(merges),
        "merges_dominating_uniform": sum(dominates(held_in(r), held_in(uniform), info.directions) for r in merges),
        "checkpoints_used_median": statistics.median(used) if used else 0,
        "checkpoints_used_by_some_merge": len({n for r in merges for n, w in r["weights"].items() if w >= USED}),
        "checkpoints": len(info.checkpoints),
        "methods_beaten_by_front": sorted(label for label, r in methods.items() if r["beaten_by_front"]),
        "methods": len(methods),
        "held_out": held_out,
        "most_balanced_trial": balanced["trial"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=REPO_ROOT / "recycler-demo" / "pool" / "pool.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "recycler-demo" / "claims")
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
