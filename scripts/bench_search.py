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
import statistics
import time
from pathlib import Path

import numpy as np
import optuna

from recycler.front import hypervolume
from recycler.search import make_sampler
from recycler.space import load_space
from recycler.spec import load_spec
from recycler.suite import load_suite
from recycler.workers import MergeWorker

DATA = Path(__file__).resolve().parent / "bench_data"
CHECKPOINTS_K = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)


class CachedScorer:
    def __init__(self, spec, objectives: list[str]) -> None:
        self.worker = MergeWorker(spec)
        self.objectives = objectives
        self.cache: dict[tuple, list[float]] = {}

    def __call__(self, weights: dict[str, float]) -> list[float]:
        key = tuple(round(weights[n], 12) for n in sorted(weights))
        if key not in self.cache:
            scores = self.worker.evaluate(weights)["scores"]
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
    baselines = [score(w) for w in space.baselines().values()]
    values = baselines + [score(w) for w in dirichlet_points(names, count, seed=12345)]
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    reference = (np.array(baselines) * signs).max(axis=0)
    result = {
        "fingerprint": fingerprint, "points": count, "reference_point_loss": reference.tolist(),
        "hypervolume": hypervolume(values, directions, reference),
    }
    path.write_text(json.dumps(result, indent=2))
    return result


def run_sampler(name, seed, budget, score, space, directions, reference) -> list[float]:
    """Hypervolume after each trial of one search."""
    study = optuna.create_study(directions=directions, sampler=make_sampler(name, seed))
    for label, weights in space.baselines().items():
        study.enqueue_trial(space.params_for(weights), user_attrs={"baseline": label})
    history, values = [], []
    for _ in range(budget):
        trial = study.ask()
        values.append(score(dict(space.suggest(trial).weights)))
        study.tell(trial, values[-1])
        history.append(hypervolume(values, directions, reference))
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=Path("recycler-demo/pool/pool.yaml"))
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=["RandomSampler", "NSGAIISampler", "TPESampler", "GPSampler"])
    parser.add_argument("--reference-points", type=int, default=500)
    parser.add_argument("--out", type=Path, default=DATA / "search_efficiency.json")
    args = parser.parse_args()

    from recycler.cli import quiet_libraries
    from recycler.pool import load_pool

    quiet_libraries()
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
    results = {}
    for sampler in args.samplers:
        runs = {}
        for seed in args.seeds:
            started = time.perf_counter()
            history = run_sampler(sampler, seed, args.budget, score, space, directions, reference)
            runs[seed] = [h / ref["hypervolume"] for h in history]
            reach = next((k + 1 for k, h in enumerate(runs[seed]) if h >= 0.95), None)
            print(f"{sampler} seed {seed}: {runs[seed][-1]:.3f} of reference after {args.budget}, "
                  f"95% at trial {reach} ({time.perf_counter() - started:.0f}s)", flush=True)
        reached = [next((k + 1 for k, h in enumerate(r) if h >= 0.95), None) for r in runs.values()]
        results[sampler] = {
            "median_fraction_at": {k: statistics.median(r[k - 1] for r in runs.values()) for k in CHECKPOINTS_K if k <= args.budget},
            "trials_to_95": reached,
            "median_trials_to_95": statistics.median(r if r is not None else float("inf") for r in reached),
            "runs": runs,
        }
    args.out.write_text(json.dumps({"objectives": objectives, "reference": ref, "results": results}, indent=2))
    header = "| sampler | " + " | ".join(f"K={k}" for k in CHECKPOINTS_K if k <= args.budget) + " | trials to 95% (median) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for sampler, r in results.items():
        cells = " | ".join(f"{v:.3f}" for v in r["median_fraction_at"].values())
        print(f"| {sampler} | {cells} | {r['median_trials_to_95']} |")


if __name__ == "__main__":
    main()
