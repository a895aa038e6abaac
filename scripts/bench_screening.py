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
4. offline, the screening rule replayed on each full study's candidates (their per-example results
   are kept), against an oracle (candidates their full scores show dominated) and a paired bound;
   and the fixed subset's error per objective, shared by every candidate.
Studies are kept under --root and reused when run again (a finished study is only re-read).
Usage:
    python scripts/bench_screening.py --pool recycler-demo/pool/pool.yaml --seeds 0 1 2 --settings 0.2:0.9
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from recycler.files import write_text_atomic
from recycler.front import FrontTracker, dominates, reference_point
from recycler.recipes import recipe_from_json
from recycler.records import stored_trials
from recycler.search import run_search
from recycler.spec import Fidelity, load_spec
from recycler.study import load_study

DATA = Path(__file__).resolve().parent / "bench_data"


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
              stop_at_examples: int | None = None) -> float:
    """Run (or re-read) one study; with stop_at_examples, stop asking once that many examples were scored."""
    run_spec = spec.model_copy(update={
        "search": spec.search.model_copy(update={"trials": trials, "seed": seed, "fidelity": fidelity}),
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
            cache[key] = worker.evaluate(t.recipe)["scores"]
        scores = cache[key]
        values = [scores[o] for o in info.objectives]
        full_values.append(values)
        on_front = not any(dominates(v, values, info.directions) for v in complete)
        optimistic = t.screening["optimistic"]
        covered = [o is None or (v <= o + 1e-12 if d == "maximize" else v >= o - 1e-12)
                   for v, o, d in zip(values, optimistic, info.directions)]
        rows.append({"trial": t.number, "on_front": on_front, "bound_held_all": all(covered),
                     "objectives_above_bound": sum(not c for c in covered), "full": values,
                     "subset": [t.screening["scores"][o] for o in info.objectives], "optimistic": optimistic})
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

def replay_rules(folder: Path, fraction: float, confidence: float, seed: int) -> dict:
    """Each non-baseline candidate of a full study, in trial order, screened offline on the subset the
    feature draws (same fraction and seed) from its kept per-example results, against the front of
    the complete trials numbered below it: by the feature's rule (each objective's own optimistic
    bound) and by a paired rule (the bound on the candidate's difference from one front member on
    the same subset examples, plus that member's known scores on the rest). A drop is wrong if the
    candidate is on the study's final front."""
    from recycler.examples import read_prompts, read_results
    from recycler.screening import Screening, choose_subset, complement

    study, info = load_study(folder)
    texts = read_prompts(folder)
    subset = choose_subset(texts, fraction, seed)
    totals = {task: len(v) for task, v in texts.items()}
    rest = complement(subset, totals)
    screening = Screening(subset, totals, confidence, frozenset(info.objectives))
    z = statistics.NormalDist().inv_cdf(confidence)
    trials = sorted(stored_trials(study, complete_only=True), key=lambda t: t.number)
    per_example = {t.number: read_results(folder, t.number) for t in trials}
    final = {t.number for t in study.best_trials}
    dirs = info.directions

    def paired_optimistic(c: dict, m: dict, m_values: list[float]) -> list[float]:
        bounds = []
        for task, m_full in zip(info.objectives, m_values):
            cs, ms = c[task]["scores"], m[task]["scores"]
            d = [cs[i] - ms[i] for i in subset[task]]
            n = len(d)
            # sd with one pseudo-example of difference 1, so a subset where the two agree everywhere still has a width
            sd = math.sqrt((sum((x - statistics.fmean(d)) ** 2 for x in d) + 1) / n)
            rest_sum = sum(ms[i] for i in rest[task]) + len(rest[task]) * (statistics.fmean(d) + z * sd / math.sqrt(n))
            bounds.append((sum(cs[i] for i in subset[task]) + rest_sum) / totals[task])
        return bounds

    out = {"confidence": confidence, "fraction": fraction, "candidates": 0, "final_front": len(final),
           "dominated_in_full": 0}  # the oracle: candidates the front before them dominates on their full scores
    for rule in ("unpaired", "paired"):
        out[rule] = {"dropped": 0, "wrong": 0}
    for k, t in enumerate(trials):
        if t.baseline is not None:
            continue
        before = trials[:k]
        front = [b for b in before if not any(dominates(o.values, b.values, dirs) for o in before)]
        c = per_example[t.number]
        out["candidates"] += 1
        out["dominated_in_full"] += any(dominates(m.values, t.values, dirs) for m in front)
        shown = {task: {"scores": [c[task]["scores"][i] for i in subset[task]]} for task in info.objectives}
        optimistic = screening.optimistic(shown, info.objectives, dirs)
        drops = {"unpaired": any(dominates(m.values, optimistic, dirs) for m in front),
                 "paired": any(dominates(m.values, paired_optimistic(c, per_example[m.number], m.values), dirs) for m in front)}
        for rule, dropped in drops.items():
            out[rule]["dropped"] += dropped
            out[rule]["wrong"] += dropped and t.number in final
    # the fixed subset's error, shared by every candidate: subset score minus full score, per objective
    diffs = [[statistics.fmean(per_example[t.number][o]["scores"][i] for i in subset[o]) - v for o, v in zip(info.objectives, t.values)]
             for t in trials]
    out["subset_minus_full"] = {o: {"mean": statistics.fmean(d[k] for d in diffs), "sd": statistics.stdev(d[k] for d in diffs)}
                                for k, o in enumerate(info.objectives)}
    cost, screen_cost = sum(totals.values()), sum(len(v) for v in subset.values())
    for rule in ("unpaired", "paired"):
        r = out[rule]
        r["examples_share_saved"] = r["dropped"] * (cost - screen_cost) / (len(trials) * cost)
        r["wrong_share_of_final_front"] = r["wrong"] / len(final)
    return out


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
    parser.add_argument("--surrogate-z", type=float, nargs="+", default=[1.2816, 0.0])
    parser.add_argument("--surrogate-min-points", type=int, default=45)
    parser.add_argument("--surrogate-ridge", type=float, default=1e-3)
    parser.add_argument("--replay-confidences", type=float, nargs="*", default=[0.5, 0.7, 0.9, 0.95],
                        help="confidences of the offline replay of the screening rule on the full studies (part 4)")
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
    settings = [tuple(float(v) for v in s.split(":")) for s in args.settings]
    started_all = time.perf_counter()
    results: dict = {"command": "python scripts/bench_screening.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k not in ("out", "skip_rescore")),
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
            name = f"screen-{fraction:g}-{confidence:g}"
            for seed in args.seeds:
                entry = results["seeds"][str(seed)]
                full = entry["full"]
                budget = full["examples"][-1]
                folder = args.root / f"{name}-s{seed}"
                fidelity = Fidelity(screen_fraction=fraction, confidence=confidence, seed=seed)
                seconds = run_study(spec, folder, args.max_trials, seed, args.workers, fidelity,
                                    stop_at_examples=int(budget * args.budget_factor))
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
                name = f"screen-{fraction:g}-{confidence:g}"
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
            print(f"replay {name} seed {seed}: of {r['candidates']} candidates, feature's rule drops {r['unpaired']['dropped']} "
                  f"({r['unpaired']['wrong']} wrong), paired rule {r['paired']['dropped']} ({r['paired']['wrong']} wrong); "
                  f"oracle {r['dominated_in_full']}; final front {r['final_front']}", flush=True)
    write_text_atomic(args.out, json.dumps(results, indent=1))

    summary = {}
    for fraction, confidence in settings:
        name = f"screen-{fraction:g}-{confidence:g}"
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
