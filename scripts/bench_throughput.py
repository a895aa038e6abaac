"""Benchmark: trials per hour on the demo pool, recycler's worker against a pipeline built from the
peers' parts (mergekit's run_merge writes each candidate to disk, then a fresh lm-eval
simple_evaluate loads and scores that folder), in one Python process on the same suite.

Also the share of a recycler trial spent outside model forward passes. Usage:
    python scripts/bench_throughput.py --pool recycler-demo/pool/pool.yaml --trials 20 --peer-trials 5
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from recycler.recipes import LinearRecipe


def candidates(names: list[str], count: int, seed: int) -> list[dict[str, float]]:
    """Random points of the simplex (flat Dirichlet), the same for both pipelines."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        mass = [rng.expovariate(1.0) for _ in names]
        total = sum(mass)
        out.append({n: m / total for n, m in zip(names, mass)})
    return out


def bench_recycler(spec, points) -> dict:
    from recycler.workers import MergeWorker

    started = time.perf_counter()
    worker = MergeWorker(spec)
    setup = time.perf_counter() - started
    worker.evaluate(LinearRecipe(points[0]).to_json())  # warm-up: first forward passes allocate
    results = [worker.evaluate(LinearRecipe(p).to_json()) for p in points]
    trial = [r.costs.trial_seconds for r in results]
    forward = [r.costs.forward_seconds for r in results]
    merge = [r.costs.merge_seconds for r in results]
    return {
        "setup_s": setup,
        "trial_s_median": statistics.median(trial),
        "merge_s_median": statistics.median(merge),
        "trials_per_hour": 3600 / statistics.mean(trial),
        "outside_forward_share": 1 - sum(forward) / sum(trial),
        "scores_first": results[0].scores,
    }


def bench_peers(spec, points) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    from recycler.pool import load_pool
    from recycler.suite import load_suite

    pool = load_pool(spec)
    suite = load_suite(spec.suite)
    specs = suite.task_specs()
    limit = suite.spec.limit
    times, scores = [], None
    for point in points:
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            config = MergeConfiguration.model_validate(LinearRecipe(point).mergekit_config(pool))
            run_merge(config, out, options=MergeOptions(quiet=True, write_model_card=False))
            result = simple_evaluate(
                model="hf", model_args=f"pretrained={out},add_bos_token=False", tasks=list(specs.values()),
                task_manager=TaskManager(include_defaults=False), batch_size=suite.spec.batch_size, device="cpu",
                limit=limit, bootstrap_iters=0,
            )["results"]
            times.append(time.perf_counter() - started)
            scores = scores or {t.task: result[t.task][f"{t.metric},none"] for t in suite.tasks}
    return {"trial_s_median": statistics.median(times), "trials_per_hour": 3600 / statistics.mean(times), "scores_first": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=Path, default=Path("recycler-demo/pool/pool.yaml"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--peer-trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from recycler.cli import quiet_libraries
    from recycler.spec import load_spec

    quiet_libraries()
    spec = load_spec(args.pool)
    points = candidates(spec.checkpoint_names, args.trials, args.seed)
    ours = bench_recycler(spec, points)
    peers = bench_peers(spec, points[: args.peer_trials])
    same = all(abs(ours["scores_first"][k] - peers["scores_first"][k]) < 1e-9 for k in peers["scores_first"])
    print(json.dumps({
        "threads": torch.get_num_threads(),
        "recycler": {k: v for k, v in ours.items() if k != "scores_first"},
        "peers": {k: v for k, v in peers.items() if k != "scores_first"},
        "speedup": ours["trials_per_hour"] / peers["trials_per_hour"],
        "first_candidate_scores_equal": same,
    }, indent=2))


if __name__ == "__main__":
    main()
