"""Benchmark: search efficiency of Optuna samplers on the demo pool's simplex space.

Hypervolume of the held-in front after K trials (baselines first, as `recycler run` does), as a
fraction of the hypervolume of a reference front from a dense random sampling of the weight space
(computed once, kept in scripts/bench_data/, keyed by the pool fingerprint), median over seeds,
and the trials each sampler needs to reach 95% of it. Scoring is in-process and deterministic, so
scores are cached by weights across runs. Usage:
    python scripts/bench_search.py --budget 100 --seeds 0 1 2 --samplers RandomSampler NSGAIISampler TPESampler GPSampler
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from recycler.baselines import baseline_recipes, reference_labels
from recycler.files import write_text_atomic
from recycler.pareto import hypervolume
from recycler.recipes import LinearRecipe
from recycler.preparation import make_sampler
from recycler.space import load_space
from recycler.spec import load_spec
from recycler.suite import load_suite
from recycler.workers import MergeWorker

DATA = Path(__file__).resolve().parent / "bench_data"
CHECKPOINTS_K = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)


def linear_baselines(names: list[str]) -> dict[str, LinearRecipe]:
    """The checkpoints alone and the uniform average, as `recycler run` enqueues them in a simplex study."""
    return {label: r for label, r in baseline_recipes(names, has_base=False).items() if label in reference_labels(names)}


class CachedScorer:
    def __init__(self, spec, objectives: list[str]) -> None:
        self.worker = MergeWorker(spec)
        self.objectives = objectives
        self.cache: dict[tuple, list[float]] = {}

    def __call__(self, weights: dict[str, float]) -> list[float]:
        key = tuple(round(weights[n], 12) for n in sorted(weights))
        if key not in self.cache:
            scores = self.worker.evaluate(LinearRecipe(weights).to_json()).scores
            self.cache[key] = [scores[o] for o in self.objectives]
        return self.cache[key]


def dirichlet_points(names: list[str], count: int, seed: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    points = []
    for _ in range(count):
        mass = [rng.expovariate(1.0) for _ in names]
        points.append({n: m / sum(mass) for n, m in zip(names, mass)})
    return points


def reference_front(score, space, names, directions, count, fingerprint) -> dict:
    path = DATA / "demo_reference_front.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached["fingerprint"] == fingerprint and cached["points"] >= count:
            return cached
    baselines = [score(dict(r.weights)) for r in linear_baselines(names).values()]
    values = baselines + [score(w) for w in dirichlet_points(names, count, seed=12345)]
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    reference = (np.array(baselines) * signs).max(axis=0)
    result = {
        "fingerprint": fingerprint, "points": count, "reference_point_loss": reference.tolist(),
        "hypervolume": hypervolume(values, directions, reference),
    }
    path.write_text(json.dumps(result, indent=2))
    return result


def run_sampler(name, seed, budget, score, space, directions, reference, verbose=False) -> list[float]:
    """Hypervolume after each trial of one search."""
    study = optuna.create_study(directions=directions, sampler=make_sampler(name, seed))
    for label, recipe in linear_baselines(space.checkpoints).items():
        study.enqueue_trial(space.params_for(recipe), user_attrs={"baseline": label})
    history, values = [], []
    for k in range(budget):
        started = time.perf_counter()
        trial = study.ask()
        recipe = space.suggest(trial)
        asked = time.perf_counter() - started
        values.append(score(dict(recipe.weights)))
        study.tell(trial, values[-1])
        history.append(hypervolume(values, directions, reference))
        if verbose:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"  {name} seed {seed} trial {k + 1}: hypervolume {history[-1]:.4g}, ask+suggest {asked:.1f}s, peak RSS {peak:.2f} GB", flush=True)
    return history


def trials_to(history: list[float], fraction: float) -> int | None:
    return next((k + 1 for k, h in enumerate(history) if h >= fraction), None)


def summarize(runs: dict[str, list[float]]) -> dict:
    """Median fraction of the reference at each K every run reached, and trials to 95% per run."""
    reached = [trials_to(r, 0.95) for r in runs.values()]
    shortest = min(len(r) for r in runs.values())
    return {
        "median_fraction_at": {k: statistics.median(r[k - 1] for r in runs.values()) for k in CHECKPOINTS_K if k <= shortest},
        "trials_to_95": reached,
        "median_trials_to_95": statistics.median(r if r is not None else float("inf") for r in reached),
        "runs": runs,
    }


def save_run(out: Path, objectives: list[str], ref: dict, sampler: str, seed: int, history: list[float]) -> dict:
    """Add one run to the results file, re-read just before writing so concurrent runs (one process per
    seed) keep each other's results; runs against another reference are dropped."""
    saved = json.loads(out.read_text()) if out.is_file() else {}
    results = saved.get("results", {}) if saved.get("reference") == ref else {}
    runs = results.get(sampler, {}).get("runs", {})
    runs[str(seed)] = history
    results[sampler] = summarize(runs)
    write_text_atomic(out, json.dumps({"objectives": objectives, "reference": ref, "results": results}, indent=2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=Path("recycler-demo/pool/pool.yaml"))
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=["RandomSampler", "NSGAIISampler", "TPESampler", "GPSampler"])
    parser.add_argument("--reference-points", type=int, default=500)
    parser.add_argument("--out", type=Path, default=DATA / "search_efficiency.json",
                        help="results file; runs of other samplers and seeds already in it are kept")
    parser.add_argument("--verbose", action="store_true", help="print every trial's hypervolume, ask time and peak memory")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()

    from recycler.cli import quiet_libraries
    from recycler.pool import load_pool

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = load_spec(args.pool)
    suite = load_suite(spec.suite)
    objectives = suite.held_in
    directions = ["maximize"] * len(objectives)
    names = spec.checkpoint_names
    space = load_space("simplex", names)
    score = CachedScorer(spec, objectives)
    started = time.perf_counter()
    ref = reference_front(score, space, names, directions, args.reference_points, load_pool(spec).fingerprint())
    print(f"reference: {ref['points']} points, hypervolume {ref['hypervolume']:.4g} ({time.perf_counter() - started:.0f}s)", flush=True)
    reference = np.array(ref["reference_point_loss"])
    for sampler in args.samplers:
        for seed in args.seeds:
            started = time.perf_counter()
            history = [h / ref["hypervolume"] for h in run_sampler(sampler, seed, args.budget, score, space, directions, reference, args.verbose)]
            print(f"{sampler} seed {seed}: {history[-1]:.3f} of reference after {args.budget}, "
                  f"95% at trial {trials_to(history, 0.95)} ({time.perf_counter() - started:.0f}s)", flush=True)
            results = save_run(args.out, objectives, ref, sampler, seed, history)
    header = "| sampler | " + " | ".join(f"K={k}" for k in CHECKPOINTS_K) + " | trials to 95% (median) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for sampler, r in results.items():
        cells = " | ".join(f"{v:.3f}" for v in r["median_fraction_at"].values())
        print(f"| {sampler} | {cells} | {r['median_trials_to_95']} |")


if __name__ == "__main__":
    main()
