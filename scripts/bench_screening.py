"""Benchmark: screening (search.fidelity) against full evaluation, hypervolume per example scored.

On the demo pool, per seed (default sampler, 2 Ray workers, the same suite):
1. a study that scores every candidate in full (`--full-trials`, 100), and one study per screening
   setting (`--settings FRACTION:CONFIDENCE ...`) run until it has scored about as many examples as
   the full study (`--budget-factor`; stopped through run_search's should_stop). Hypervolume of the
   fully evaluated trials (the study's own reference point: the worst of the checkpoints alone and
   their average) after each trial, against the cumulative examples scored (`examples_scored`, every
   trial, in trial order). Reported: the examples screening needs to reach full evaluation's
   hypervolume after its 100 trials (ratio to full's examples; target <= 0.4), and screening's
   hypervolume at full's budget of examples (ratio to full's; target >= 1.1).
2. every screened-out trial scored once in full (in-process MergeWorker): would it be on the final
   front of that study's fully evaluated trials plus it? (wrong drops; target <= 5% of the front)
3. offline, a MAP surrogate (ridge-regularized Scheffe quadratic in the checkpoint weights, one per
   objective, optimistic by its leave-one-out error) replayed over each screening study's candidates
   as a filter before screening: what it would have rejected, and at what cost.
4. offline, the screening rule (paired with each front member) replayed on each full study's
   candidates (their per-example results are kept), against an oracle (candidates their full scores
   show dominated) and the unpaired rule it replaced; and the fixed subset's error per objective,
   shared by every candidate.
5. with `--projections 2 3`, the replay of part 4 on every pair and triple of the full studies'
   objectives, as if the search had optimized only those: both rules' wrong drops over many fronts.
`--objectives` optimizes some of the suite's held-in tasks only (every task is still scored);
with `--examples-per-task N` the demo's tasks get N examples each and only the objectives are scored.
`--ignore-drops` runs the screening studies with TPE that never sees the dropped candidates, against
the feature's choice of telling them to TPE as pruned.
Studies are kept under --root and reused when run again (a finished study is only re-read).
Usage:
    python scripts/bench_screening.py --pool recycler-demo/pool/pool.yaml --seeds 0 1 2 --settings 0.2:0.9
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from recycler.files import write_text_atomic
from recycler.front import reference_point
from recycler.pareto import FrontTracker, dominates
from recycler.recipes import recipe_from_json
from recycler.records import stored_trials
from recycler.search import run_search
from recycler.spec import Fidelity, load_spec
from recycler.study import load_study

DATA = Path(__file__).resolve().parent / "bench_data"
SUITES = Path(__file__).resolve().parent.parent / "eval_suites"


def scaled_demo_suite(root: Path, examples: int, held_in: list[str]):
    """The demo suite's tasks with `examples` examples each, from the demo's own generator (the first
    100 are the demo's), `held_in` as objectives and no held-out task: a suite where a screening
    subset holds as many examples as a real suite's would."""
    from recycler.demo.skills import write_eval_data
    from recycler.suite import SuiteSpec, SuiteTask

    folder = root / f"suite-{examples}"
    if not (folder / "data").is_dir():
        shutil.copytree(SUITES / "demo", folder, ignore=shutil.ignore_patterns("data"))
        write_eval_data(folder / "data", examples_per_task=examples)
    return SuiteSpec(name=f"demo-{examples}", task_dir=folder, limit=examples,
                     held_in=[SuiteTask(task=task) for task in held_in])


class _StudyWithoutDrops:
    """A study as a sampler reads it, without its pruned trials (the ones screening dropped)."""

    def __init__(self, study) -> None:
        self._study = study

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False):
        from optuna.trial import TrialState

        kept = tuple(s for s in (states or tuple(TrialState)) if s != TrialState.PRUNED)
        return self._study._get_trials(deepcopy=deepcopy, states=kept, use_cache=use_cache)


def register_tpe_ignoring_drops() -> str:
    """The alternative to telling TPE a dropped candidate is pruned (worse than every completed trial):
    TPE that never sees it, as if it had failed. Registered under optuna.samplers so a spec can name
    it; benchmark only (it reaches into the study TPE reads, through Optuna's private `_get_trials`)."""
    import optuna

    class TPESamplerIgnoringDrops(optuna.samplers.TPESampler):
        def sample_relative(self, study, trial, search_space):
            return super().sample_relative(_StudyWithoutDrops(study), trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return super().sample_independent(_StudyWithoutDrops(study), trial, param_name, param_distribution)

    optuna.samplers.TPESamplerIgnoringDrops = TPESamplerIgnoringDrops
    return "TPESamplerIgnoringDrops"


def examples_reached(folder: Path, limit: int):
    """A should_stop for run_search: true once the study in the folder has scored `limit` examples."""
    watcher: dict = {}

    def should_stop() -> bool:
        if "study" not in watcher:
            if not (folder / "study.json").exists():
                return False
            watcher["study"] = load_study(folder)[0]
        return sum(t.examples_scored or 0 for t in stored_trials(watcher["study"])) >= limit

    return should_stop


def run_study(spec, folder: Path, trials: int, seed: int, workers: int, fidelity: Fidelity | None,
              stop_at_examples: int | None = None, sampler: str = "default") -> float:
    """Run (or re-read) one study; with stop_at_examples, stop asking once that many examples were scored."""
    run_spec = spec.model_copy(update={
        "search": spec.search.model_copy(update={"trials": trials, "seed": seed, "fidelity": fidelity, "sampler": sampler}),
        "resources": spec.resources.model_copy(update={"workers": workers}),
    })
    should_stop = None if stop_at_examples is None else examples_reached(folder, stop_at_examples)
    timing = folder / "bench_seconds.txt"  # the first run's time, kept: a finished study is only re-read
    if timing.exists() and (stop_at_examples is None or sum(
            t.examples_scored or 0 for t in stored_trials(load_study(folder)[0])) >= stop_at_examples):
        return float(timing.read_text())
    started = time.perf_counter()
    run_search(run_spec, folder, progress=False, should_stop=should_stop)
    seconds = time.perf_counter() - started
    timing.write_text(f"{seconds:.1f}")
    return seconds


def curve(folder: Path) -> dict:
    """Per trial (in trial order): cumulative examples scored and hypervolume of the complete trials so far."""
    study, info = load_study(folder)
    trials = sorted(stored_trials(study), key=lambda t: t.number)
    reference = reference_point(study, info)
    tracker = FrontTracker(info.directions, reference)
    examples, hv, spent = [], [], 0
    for t in trials:
        spent += t.examples_scored or 0
        if t.complete:
            tracker.add(t.values)
        examples.append(spent)
        hv.append(tracker.hypervolume)
    counts = {
        "trials": len(trials),
        "complete": sum(t.complete for t in trials),
        "screened_out": sum(t.screened_out for t in trials),
        "finished_after_screening": sum(t.complete and t.screening is not None for t in trials),
        "baselines": sum(t.baseline is not None for t in trials),
        "other_states": sorted({t.state.name for t in trials if not (t.complete or t.screened_out)}),
        "front": len(study.best_trials),
    }
    return {"examples": examples, "hypervolume": hv, "reference_point_loss": reference.tolist(), **counts}


def hv_at_budget(c: dict, budget: int) -> float:
    """Hypervolume after the last trial whose cumulative examples are within the budget."""
    within = [h for e, h in zip(c["examples"], c["hypervolume"]) if e <= budget]
    return within[-1] if within else 0.0


def examples_to_reach(c: dict, target: float) -> int | None:
    return next((e for e, h in zip(c["examples"], c["hypervolume"]) if h >= target - 1e-12), None)


# ---- 2. wrong drops ---------------------------------------------------------------------------

def wrong_drops(spec, folder: Path, worker, cache: dict) -> dict:
    study, info = load_study(folder)
    trials = stored_trials(study)
    complete = [t.values for t in trials if t.complete]
    front = [v for v in complete if not any(dominates(o, v, info.directions) for o in complete)]
    dropped = [t for t in trials if t.screened_out]
    rows, full_values = [], []
    for t in dropped:
        key = json.dumps(t.recipe, sort_keys=True)
        if key not in cache:
            cache[key] = worker.evaluate(t.recipe).scores
        scores = cache[key]
        values = [scores[o] for o in info.objectives]
        full_values.append(values)
        on_front = not any(dominates(v, values, info.directions) for v in complete)
        optimistic = t.screening.optimistic
        covered = [o is None or (v <= o + 1e-12 if d == "maximize" else v >= o - 1e-12)
                   for v, o, d in zip(values, optimistic, info.directions)]
        rows.append({"trial": t.number, "on_front": on_front, "bound_held_all": all(covered),
                     "objectives_above_bound": sum(not c for c in covered), "full": values,
                     "subset": [t.screening.scores[o] for o in info.objectives], "optimistic": optimistic})
    wrong = [r for r in rows if r["on_front"]]
    # all dropped trials added at once: how many of them would the joint front hold
    union = complete + full_values
    joint = sum(1 for v in full_values if not any(dominates(o, v, info.directions) for o in union))
    objective_checks = sum(len(r["full"]) for r in rows)
    return {
        "final_front": len(front), "screened_out": len(rows), "wrongly_dropped": len(wrong),
        "wrongly_dropped_share_of_front": len(wrong) / len(front) if front else None,
        "wrongly_dropped_trials": [r["trial"] for r in wrong],
        "on_joint_front_if_all_added": joint,
        "bound_held_all_objectives": sum(r["bound_held_all"] for r in rows),
        "objective_bounds_exceeded": sum(r["objectives_above_bound"] for r in rows),
        "objective_bounds_checked": objective_checks,
        "trials": rows,
    }


# ---- 3. the MAP surrogate, replayed ------------------------------------------------------------

def features(weights: list[dict], names: list[str]) -> np.ndarray:
    """Scheffe quadratic on the simplex: w_i and w_i*w_j (i<j); the constant and squares are implied."""
    w = np.array([[x.get(n, 0.0) for n in names] for x in weights], dtype=float)
    pairs = [w[:, i] * w[:, j] for i in range(len(names)) for j in range(i + 1, len(names))]
    return np.column_stack([w, *pairs])


class Surrogate:
    """Ridge (MAP with a Gaussian prior) least squares per objective; the error is the RMS of the
    leave-one-out residuals (from the hat matrix)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, ridge: float) -> None:
        a = x.T @ x + ridge * np.eye(x.shape[1])
        self.coef = np.linalg.solve(a, x.T @ y)
        hat = np.einsum("ij,ji->i", x, np.linalg.solve(a, x.T))
        loo = (y - x @ self.coef) / (1 - hat)[:, None]
        self.sigma = np.sqrt((loo ** 2).mean(axis=0))

    def optimistic(self, x: np.ndarray, z: float) -> np.ndarray:
        return x @ self.coef + z * self.sigma


def surrogate_replay(folder: Path, drops: dict, z: float, min_points: int, ridge: float) -> dict:
    """Replay the screening study's candidates in trial order: before each, fit on the fully evaluated
    trials numbered below it; reject it if its optimistic prediction is dominated by their front."""
    study, info = load_study(folder)
    names = info.checkpoints
    trials = sorted(stored_trials(study), key=lambda t: t.number)
    final = {t.number for t in study.best_trials}
    true_full = {r["trial"]: r for r in drops["trials"]}
    full_cost = max(t.examples_scored or 0 for t in trials)
    out = {"z": z, "min_points": min_points, "ridge": ridge, "considered": 0, "rejected": 0,
           "rejected_screened_out": 0, "rejected_finished": 0, "rejected_on_final_front": 0,
           "rejected_truly_on_front": 0, "examples_saved": 0, "examples_spent": sum(t.examples_scored or 0 for t in trials),
           "loo_rmse_at_end": None}
    done: list = []
    for t in trials:
        if t.baseline is None and (t.complete or t.screened_out) and len(done) >= min_points:
            x = features([recipe_from_json(d.recipe).checkpoint_weights() for d in done], names)
            y = np.array([d.values for d in done])
            model = Surrogate(x, y, ridge)
            pred = model.optimistic(features([recipe_from_json(t.recipe).checkpoint_weights()], names), z)[0].tolist()
            front = [d.values for d in done]
            rejected = any(dominates(v, pred, info.directions) for v in front)
            out["considered"] += 1
            out["loo_rmse_at_end"] = model.sigma.tolist()
            if rejected:
                out["rejected"] += 1
                out["examples_saved"] += t.examples_scored or 0
                out["rejected_screened_out"] += t.screened_out
                out["rejected_finished"] += t.complete
                out["rejected_on_final_front"] += t.number in final
                out["rejected_truly_on_front"] += (t.number in final) or bool(true_full.get(t.number, {}).get("on_front"))
        if t.complete:
            done.append(t)
    out["examples_saved_share"] = out["examples_saved"] / out["examples_spent"]
    out["final_front"] = len(final)
    out["full_trial_examples"] = full_cost
    return out


# ---- 4. the screening rule replayed on full evaluation's candidates --------------------------

def unpaired_optimistic(candidate: dict[str, list[float]], totals: dict[str, int], z: float,
                        directions: list[str]) -> list[float]:
    """The rule screening used before it paired: per objective, the candidate's unscored examples
    assumed as good as a one-sided bound from its own subset allows (Wilson's for 0/1 scores)."""
    bounds = []
    for (task, values), direction in zip(candidate.items(), directions):
        n, mean, sign = len(values), statistics.fmean(values), 1 if direction == "maximize" else -1
        if set(values) <= {0.0, 1.0}:
            centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
            rest = centre + sign * z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        else:
            rest = mean + sign * z * statistics.stdev(values) / math.sqrt(n)
        bounds.append((sum(values) + (totals[task] - n) * rest) / totals[task])
    return bounds


def replay_rules(folder: Path, fraction: float, confidence: float, seed: int, keep: tuple[int, ...] | None = None) -> dict:
    """Each non-baseline candidate of a full study, in trial order, screened offline on the subset the
    feature draws (same fraction and seed) from its kept per-example results, against the front of
    the complete trials numbered below it: by the feature's rule (paired with each front member on
    the subset) and by the unpaired rule it replaced (the candidate's own subset bound against the
    members' full scores). A drop is wrong if the candidate is on the study's final front. `keep`:
    the study's objectives (by position) the replay looks at, as if the search had only those."""
    from recycler.examples import read_prompts, read_results
    from recycler.screening import FrontMember, Screening, choose_stages

    study, info = load_study(folder)
    keep = keep or tuple(range(len(info.objectives)))
    objectives, dirs = [info.objectives[k] for k in keep], [info.directions[k] for k in keep]
    texts = read_prompts(folder)
    (subset,) = choose_stages(texts, [fraction], seed)
    totals = {task: len(v) for task, v in texts.items()}
    screening = Screening([subset], totals, confidence, frozenset(objectives))  # the rule of issue 18: no credit, no history
    z = statistics.NormalDist().inv_cdf(confidence)
    trials = [replace(t, values=[t.values[k] for k in keep])
              for t in sorted(stored_trials(study, complete_only=True), key=lambda t: t.number)]
    per_example = {t.number: read_results(folder, t.number) for t in trials}
    on_subset = {t.number: screening.on_subset(per_example[t.number], objectives) for t in trials}
    final = {t.number for t in trials if not any(dominates(o.values, t.values, dirs) for o in trials)}

    out = {"confidence": confidence, "fraction": fraction, "candidates": 0, "final_front": len(final),
           "dominated_in_full": 0}  # the oracle: candidates the front before them dominates on their full scores
    for rule in ("paired", "unpaired"):
        out[rule] = {"dropped": 0, "wrong": 0}
    for k, t in enumerate(trials):
        if t.baseline is not None:
            continue
        before = trials[:k]
        front = [b for b in before if not any(dominates(o.values, b.values, dirs) for o in before)]
        out["candidates"] += 1
        out["dominated_in_full"] += any(dominates(m.values, t.values, dirs) for m in front)
        members = [FrontMember(m.number, m.values, on_subset[m.number]) for m in front]
        unpaired = unpaired_optimistic(on_subset[t.number], totals, z, dirs)
        drops = {"paired": not screening.verdict(on_subset[t.number], members, objectives, dirs).finish,
                 "unpaired": any(dominates(m.values, unpaired, dirs) for m in front)}
        for rule, dropped in drops.items():
            out[rule]["dropped"] += dropped
            out[rule]["wrong"] += dropped and t.number in final
    # the fixed subset's error, shared by every candidate: subset score minus full score, per objective
    diffs = [[statistics.fmean(on_subset[t.number][o]) - v for o, v in zip(objectives, t.values)] for t in trials]
    out["subset_minus_full"] = {o: {"mean": statistics.fmean(d[k] for d in diffs), "sd": statistics.stdev(d[k] for d in diffs)}
                                for k, o in enumerate(objectives)}
    cost, screen_cost = sum(totals.values()), sum(len(v) for v in subset.values())
    for rule in ("paired", "unpaired"):
        r = out[rule]
        r["examples_share_saved"] = r["dropped"] * (cost - screen_cost) / (len(trials) * cost)
        r["wrong_share_of_final_front"] = r["wrong"] / len(final)
    return out


def replay_projections(folders: dict[str, Path], fraction: float, confidence: float, size: int) -> dict:
    """The replay on every `size` of each full study's objectives (as if the search had optimized
    those only; its candidates are still the 6-objective search's): the spread of both rules'
    wrong drops over many small fronts."""
    rows = {"paired": [], "unpaired": []}
    for seed, folder in folders.items():
        _, info = load_study(folder)
        for keep in itertools.combinations(range(len(info.objectives)), size):
            r = replay_rules(folder, fraction, confidence, int(seed), keep)
            for rule in rows:
                rows[rule].append((r[rule]["examples_share_saved"], r[rule]["wrong_share_of_final_front"]))
    return {rule: {"fronts": len(v), "median_examples_share_saved": statistics.median(x for x, _ in v),
                   "mean_wrong_share_of_front": statistics.fmean(w for _, w in v), "max_wrong_share_of_front": max(w for _, w in v),
                   "fronts_over_5_percent_wrong": sum(w > 0.05 for _, w in v)} for rule, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=Path("recycler-demo/pool/pool.yaml"))
    parser.add_argument("--root", type=Path, default=Path("recycler-demo/screening"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--full-trials", type=int, default=100)
    parser.add_argument("--settings", nargs="+", default=["0.2:0.9"], help="FRACTION:CONFIDENCE of each screening setting")
    parser.add_argument("--budget-factor", type=float, default=1.05, help="screening runs until this times full's examples")
    parser.add_argument("--max-trials", type=int, default=600, help="cap on a screening study's trials")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--objectives", nargs="+", help="held-in tasks to optimize (default: all of the suite's)")
    parser.add_argument("--examples-per-task", type=int,
                        help="score the demo's tasks on this many examples each (needs --objectives; no held-out tasks)")
    parser.add_argument("--surrogate-z", type=float, nargs="+", default=[1.2816, 0.0])
    parser.add_argument("--surrogate-min-points", type=int, default=45)
    parser.add_argument("--surrogate-ridge", type=float, default=1e-3)
    parser.add_argument("--replay-confidences", type=float, nargs="*", default=[0.5, 0.7, 0.9, 0.95],
                        help="confidences of the offline replay of the screening rule on the full studies (part 4)")
    parser.add_argument("--projections", type=int, nargs="*", default=[],
                        help="replay the rules on every pair (2), triple (3), ... of the full studies' objectives (part 5)")
    parser.add_argument("--ignore-drops", action="store_true",
                        help="screening studies use TPE that never sees dropped candidates (instead of seeing them pruned)")
    parser.add_argument("--skip-rescore", action="store_true", help="leave out part 2 (and the surrogate's use of it)")
    parser.add_argument("--out", type=Path, default=DATA / "screening.json")
    args = parser.parse_args()

    import optuna
    import ray
    import torch

    from recycler.cli import quiet_libraries

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = load_spec(args.pool)
    if args.examples_per_task:
        spec = spec.model_copy(update={"suite": scaled_demo_suite(args.root, args.examples_per_task, args.objectives)})
    elif args.objectives:
        spec = spec.model_copy(update={"objectives": args.objectives})
    settings = [tuple(float(v) for v in s.split(":")) for s in args.settings]
    sampler, suffix = (register_tpe_ignoring_drops(), "-ignoring-drops") if args.ignore_drops else ("default", "")
    started_all = time.perf_counter()
    results: dict = {"command": "python scripts/bench_screening.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k not in ("out", "skip_rescore", "ignore_drops") and v is not None)
        + (" --ignore-drops" if args.ignore_drops else ""),
        "seeds": {}}
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for seed in args.seeds:
            folder = args.root / f"full-s{seed}"
            seconds = run_study(spec, folder, args.full_trials, seed, args.workers, None)
            full = curve(folder)
            results["seeds"][str(seed)] = {"full": {**full, "seconds": seconds}}
            print(f"seed {seed} full: {full['trials']} trials, {full['examples'][-1]} examples, "
                  f"hv {full['hypervolume'][-1]:.4g} ({seconds:.0f}s)", flush=True)
        for fraction, confidence in settings:  # every seed of a setting before the next setting
            name = f"screen-{fraction:g}-{confidence:g}{suffix}"
            for seed in args.seeds:
                entry = results["seeds"][str(seed)]
                full = entry["full"]
                budget = full["examples"][-1]
                folder = args.root / f"{name}-s{seed}"
                fidelity = Fidelity(screen_fraction=fraction, confidence=confidence, seed=seed, member_credit=0, history_after=None)
                seconds = run_study(spec, folder, args.max_trials, seed, args.workers, fidelity,
                                    stop_at_examples=int(budget * args.budget_factor), sampler=sampler)
                c = curve(folder)
                h100 = full["hypervolume"][-1]
                reach = examples_to_reach(c, h100)
                entry[name] = {**c, "seconds": seconds, "fraction": fraction, "confidence": confidence,
                               "examples_to_reach_full_hv": reach,
                               "examples_ratio_to_reach": None if reach is None else reach / budget,
                               "hv_at_full_budget": hv_at_budget(c, budget),
                               "hv_ratio_at_equal_budget": hv_at_budget(c, budget) / h100}
                print(f"seed {seed} {name}: {c['trials']} trials ({c['screened_out']} screened out, "
                      f"{c['finished_after_screening']} finished), {c['examples'][-1]} examples; reaches full's hv at "
                      f"{entry[name]['examples_ratio_to_reach']} of its examples; hv ratio at equal budget "
                      f"{entry[name]['hv_ratio_at_equal_budget']:.3f} ({seconds:.0f}s)", flush=True)
                write_text_atomic(args.out, json.dumps(results, indent=1))
    finally:
        ray.shutdown()

    if not args.skip_rescore:
        from recycler.workers import MergeWorker

        torch.set_num_threads(args.workers)
        worker, cache = MergeWorker(spec), {}
        for seed in args.seeds:
            for fraction, confidence in settings:
                name = f"screen-{fraction:g}-{confidence:g}{suffix}"
                folder = args.root / f"{name}-s{seed}"
                started = time.perf_counter()
                drops = wrong_drops(spec, folder, worker, cache)
                entry = results["seeds"][str(seed)][name]
                entry["wrong_drops"] = drops
                print(f"seed {seed} {name}: {drops['wrongly_dropped']} of {drops['screened_out']} dropped would be on the "
                      f"front of {drops['final_front']} ({time.perf_counter() - started:.0f}s)", flush=True)
                entry["surrogate"] = [surrogate_replay(folder, drops, z, args.surrogate_min_points, args.surrogate_ridge)
                                      for z in args.surrogate_z]
                for s in entry["surrogate"]:
                    print(f"  surrogate z={s['z']}: rejects {s['rejected']} of {s['considered']} "
                          f"({s['rejected_screened_out']} screened out, {s['rejected_finished']} finished, "
                          f"{s['rejected_truly_on_front']} truly on the front); saves {s['examples_saved_share']:.1%}", flush=True)
                write_text_atomic(args.out, json.dumps(results, indent=1))

    replays = results["replay"] = {}
    for fraction, confidence in sorted({(f, c) for f, c in settings} | {(f, c) for f in {f for f, _ in settings} for c in args.replay_confidences}):
        name = f"screen-{fraction:g}-{confidence:g}"
        replays[name] = {str(seed): replay_rules(args.root / f"full-s{seed}", fraction, confidence, seed) for seed in args.seeds}
        for seed, r in replays[name].items():
            print(f"replay {name} seed {seed}: of {r['candidates']} candidates, the feature's (paired) rule drops "
                  f"{r['paired']['dropped']} ({r['paired']['wrong']} wrong), the unpaired rule {r['unpaired']['dropped']} "
                  f"({r['unpaired']['wrong']} wrong); "
                  f"oracle {r['dominated_in_full']}; final front {r['final_front']}", flush=True)
    write_text_atomic(args.out, json.dumps(results, indent=1))

    full_folders = {str(seed): args.root / f"full-s{seed}" for seed in args.seeds}
    projections = results["projections"] = {}
    for size in args.projections:
        for fraction, confidence in settings:
            name = f"{size} objectives, screen-{fraction:g}-{confidence:g}"
            projections[name] = replay_projections(full_folders, fraction, confidence, size)
            print(f"projections {name}: {json.dumps(projections[name])}", flush=True)
    write_text_atomic(args.out, json.dumps(results, indent=1))

    summary = {}
    for fraction, confidence in settings:
        name = f"screen-{fraction:g}-{confidence:g}{suffix}"
        runs = [results["seeds"][str(s)][name] for s in args.seeds]
        reach = [r["examples_ratio_to_reach"] for r in runs]
        summary[name] = {
            "examples_ratio_to_reach": reach,
            "median_examples_ratio_to_reach": statistics.median(x if x is not None else math.inf for x in reach),
            "hv_ratio_at_equal_budget": [r["hv_ratio_at_equal_budget"] for r in runs],
            "median_hv_ratio_at_equal_budget": statistics.median(r["hv_ratio_at_equal_budget"] for r in runs),
        }
        if not args.skip_rescore:
            shares = [r["wrong_drops"]["wrongly_dropped_share_of_front"] for r in runs]
            summary[name]["wrongly_dropped_share_of_front"] = shares
            summary[name]["median_wrongly_dropped_share_of_front"] = statistics.median(shares)
        print(name, json.dumps(summary[name]), flush=True)
    results["summary"] = summary
    results["seconds_this_invocation"] = time.perf_counter() - started_all  # studies re-read: their own times are per study
    write_text_atomic(args.out, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
