"""Compare the searched linear front with the merge methods of the literature on the demo pool.

One study per search space (same budget, seed and workers), then:
- every baseline (the checkpoints alone, the uniform average, task arithmetic, TIES, DARE-TIES,
  DARE-linear and SLERP at the seed papers' defaults, scored at the start of each study): its mean
  held-in score and whether the simplex study's front dominates it;
- every space's front: its hypervolume against the shared reference point (the worst of the
  checkpoints alone and their average, per objective) and how many members of the union front of
  all spaces it holds.
Usage:
    python scripts/compare_methods.py --trials 60 --spaces simplex task_arithmetic ties dare_ties dare_linear layerwise
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from optuna.trial import TrialState

from recycler.files import write_text_atomic
from recycler.front import front_records, reference_point
from recycler.pareto import dominates, hypervolume
from recycler.search import run_search
from recycler.spec import load_spec
from recycler.study import load_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=Path("recycler-demo/pool/pool.yaml"))
    parser.add_argument("--root", type=Path, default=Path("recycler-demo/methods"))
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--spaces", nargs="+", default=["simplex", "task_arithmetic", "ties", "dare_ties", "dare_linear", "layerwise"])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "bench_data" / "method_comparison.json")
    args = parser.parse_args()

    from recycler.cli import quiet_libraries

    quiet_libraries()
    spec = load_spec(args.pool)
    studies = {}
    for space in args.spaces:
        started = time.perf_counter()
        run_spec = spec.model_copy(update={
            "search": spec.search.model_copy(update={"space": space, "trials": args.trials}),
            "resources": spec.resources.model_copy(update={"workers": args.workers}),
        })
        run_search(run_spec, args.root / space, progress=False)
        studies[space] = load_study(args.root / space)
        print(f"{space}: {args.trials} trials in {time.perf_counter() - started:.0f}s", flush=True)

    first, info = studies[args.spaces[0]]
    reference = reference_point(first, info)
    trials = {space: [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "baseline" not in t.user_attrs]
              for space, (study, _) in studies.items()}
    union = [(space, t.values) for space, ts in trials.items() for t in ts]
    on_union = [not any(dominates(other, values, info.directions) for _, other in union) for _, values in union]
    spaces = {}
    for space, (study, _) in studies.items():
        spaces[space] = {
            "hypervolume": hypervolume([t.values for t in trials[space]], info.directions, reference),
            "front_size": len(study.best_trials),
            "on_union_front": int(sum(on for (s, _), on in zip(union, on_union) if s == space)),
            "best_mean_held_in": max(statistics.fmean(t.values) for t in trials[space]),
        }
    union_front = [v for (_, v), on in zip(union, on_union) if on]
    baselines = []
    for record in front_records(first, info):
        if not record["baseline"]:
            continue
        values = [record["scores"][o] for o in info.objectives]
        baselines.append({
            "baseline": record["baseline_name"], "method": record["method"], "settings": record["settings"],
            "mean_held_in": statistics.fmean(values),
            "beaten_by_simplex_front": record["beaten_by_front"],
            "beaten_by_union_front": any(dominates(v, values, info.directions) for v in union_front),
        })
    write_text_atomic(args.out, json.dumps({"objectives": info.objectives, "trials": args.trials, "spaces": spaces,
                                            "baselines": baselines}, indent=2))
    print("| space | hypervolume | front size | on the union front | best mean held-in |")
    print("|---|---|---|---|---|")
    for space, s in spaces.items():
        print(f"| {space} | {s['hypervolume']:.4g} | {s['front_size']} | {s['on_union_front']} | {s['best_mean_held_in']:.3f} |")
    print("\n| baseline | method | mean held-in | dominated by the simplex front |")
    print("|---|---|---|---|")
    for b in baselines:
        print(f"| {b['baseline']} | {b['method']} | {b['mean_held_in']:.3f} | {'yes' if b['beaten_by_simplex_front'] else 'no'} |")


if __name__ == "__main__":
    main()
